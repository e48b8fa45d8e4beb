"""One Localizer protocol: a toy localizer defined and registered here works in the localize stage (through
the CLI, found with --plugin), in the ProcessBench harness and as the second stage of Fallback(rules, toy);
every built-in satisfies the protocol; the registry's errors name what is wrong.

This file is also the plugin the CLI imports (``--plugin tests/test_localizer_protocol.py``): importing it
registers the toy, as a user's plugin module would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from stepdata import read_table, write_table
from stepdata.bench.processbench import run_processbench
from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize import (
    Fallback,
    Localization,
    Localizer,
    Solution,
    available_localizers,
    load_plugin,
    make_localizer,
    options_for,
    register_localizer,
    unregister_localizer,
)
from stepdata.localize.base import status_for
from stepdata.pipeline.localize import LocalizeStage

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


class OopsLocalizer:
    """The toy: the first step containing ``word`` is wrong. Costs one call per solution and a token per step."""

    name = "toy"

    def __init__(self, word: str = "oops") -> None:
        self.word = word
        self.batches: list[list[str]] = []  # the solution ids of every locate call

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        self.batches.append([s.solution_id for s in solutions])
        results = []
        for solution in solutions:
            hit = next((i for i, step in enumerate(solution.steps) if self.word in step), -1)
            error_step, status = status_for(hit, solution.finished)
            results.append(Localization(error_step, status, confidence=0.5, evidence={"word": self.word, "step": hit},
                                        method="toy", calls=1, tokens=len(solution.steps)))
        return results


@register_localizer("toy")
def make_toy(word: str = "oops") -> OopsLocalizer:
    return OopsLocalizer(word)


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """The toy registered (at import, by the decorator) for this module's tests only."""
    assert "toy" in available_localizers()
    yield
    unregister_localizer("toy")


class ScriptedJudge(Generator):
    """Boxes step 1 for every request (a judge or a policy that needs no model)."""

    backend = "scripted"

    def _generate(self, requests, sampling, progress, stats):
        return [GenerationResult(r.request_id, "prompt", 10, [Completion("\\boxed{1}", "stop", 3)] * sampling.n)
                for r in requests]


BUILTINS = ("rules", "exact", "judge", "rules+judge", "rollouts")


def test_every_builtin_satisfies_the_protocol():
    assert set(BUILTINS) <= set(available_localizers())
    for name in BUILTINS:
        localizer = make_localizer(name, **options_for(name, {"generator": ScriptedJudge("judge"), "votes": 2}))
        assert isinstance(localizer, Localizer), name
        assert localizer.name == name


def test_the_registry_names_what_is_wrong():
    with pytest.raises(ValueError, match=r"unknown localizer 'nope'; available: \[.*'rules'.*'toy'"):
        make_localizer("nope")
    with pytest.raises(ValueError, match=r"'rules' does not take option\(s\) \['votes'\]; it takes \['rules_tolerance'\]"):
        make_localizer("rules", votes=3)
    with pytest.raises(ValueError, match=r"'judge' needs option\(s\) \['generator'\]"):
        make_localizer("judge")
    with pytest.raises(ValueError, match="already registered"):
        register_localizer("toy")(lambda: OopsLocalizer())
    register_localizer("not-a-localizer")(lambda: object())
    try:
        with pytest.raises(TypeError, match="no name and locate"):
            make_localizer("not-a-localizer")
    finally:
        unregister_localizer("not-a-localizer")


def test_a_localization_agrees_with_its_status_and_keeps_todays_rationale():
    with pytest.raises(ValueError, match="needs error_step -1"):
        Localization(2, "no_error")
    with pytest.raises(ValueError, match="not one of"):
        Localization(None, "found")
    assert Localization(None, "unknown", evidence={"votes": [1], "x": "é"}).rationale == '{"votes": [1], "x": "é"}'
    assert Localization(0, "error", note="step 0: '2 + 2 = 5' is false").rationale == "step 0: '2 + 2 = 5' is false"


BASE = {"prompt": "p", "completion": "c", "pred_answer": "1", "finish_reason": "stop", "model": "m", "sampling": None,
        "prompt_tokens": 1, "completion_tokens": 1, "error": None}


def rollouts_table() -> pd.DataFrame:
    return pd.DataFrame([
        BASE | {"problem_id": "p", "rollout_id": "hit", "steps": ["We add.\n", "oops, 3.\n", "So 3."], "correct": False},
        BASE | {"problem_id": "p", "rollout_id": "clean", "steps": ["We add.\n", "So 3."], "correct": False},
        BASE | {"problem_id": "p", "rollout_id": "cut", "steps": ["We add.\n", "So"], "correct": False,
                "finish_reason": "length"},
        BASE | {"problem_id": "p", "rollout_id": "right", "steps": ["oops"], "correct": True},
        BASE | {"problem_id": "q", "rollout_id": "false", "steps": ["2 * 3 = 7\n", "oops"], "correct": False},
    ])


def test_the_toy_in_the_localize_command_found_by_plugin(tmp_path):
    write_table(rollouts_table(), tmp_path / "r.parquet", "rollouts")
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "localize", str(tmp_path / "r.parquet"),
                           "--method", "toy", "--plugin", str(THIS), "--out", str(tmp_path / "l.parquet")],
                          check=False, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "localized 2 of 4 wrong rollouts (no error found 1, unknown 0, unfinished 1)" in done.stdout
    table = read_table(tmp_path / "l.parquet", kind="localized")
    rows = table.set_index("rollout_id")
    assert list(rows.index) == ["hit", "clean", "cut", "false"]  # the right rollout is not localized
    assert rows.status.to_dict() == {"hit": "error", "clean": "no_error", "cut": "unfinished", "false": "error"}
    assert rows.error_step["hit"] == 1 and rows.error_step["clean"] == -1 and pd.isna(rows.error_step["cut"])
    assert set(rows.method) == {"toy"} and rows.localizer_calls.tolist() == [1, 1, 1, 1]
    assert json.loads(rows.rationale["hit"]) == {"word": "oops", "step": 1}
    assert table.attrs["stepdata"]["config"]["plugins"] == [str(THIS)]
    summary = json.loads((tmp_path / "l.parquet.summary.json").read_text())
    assert summary["stage_stats"]["by_method"] == {"toy": 4} and summary["stage_stats"]["localizer_tokens"] == 9

    unknown = subprocess.run([sys.executable, str(REPO / "cli.py"), "localize", str(tmp_path / "r.parquet"),
                              "--method", "toy", "--out", str(tmp_path / "x.parquet")],
                             check=False, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert unknown.returncode == 2 and "'toy' is not a registered localizer; available: exact, human, judge" in unknown.stderr


PROCESSBENCH = [  # ProcessBench's layout: problem, steps, 0-based label (-1: no error)
    {"id": "gsm8k-0", "generator": "toy", "problem": "What is 1 + 2?", "steps": ["1 + 2 = 3.", "oops, 4."],
     "label": 1, "final_answer_correct": False},
    {"id": "gsm8k-1", "generator": "toy", "problem": "What is 2 + 2?", "steps": ["2 + 2 = 4.", "So 4."],
     "label": -1, "final_answer_correct": True},
    {"id": "gsm8k-2", "generator": "toy", "problem": "What is 3 + 2?", "steps": ["3 + 2 = 6.", "So 6."],
     "label": 0, "final_answer_correct": False},
    {"id": "gsm8k-3", "generator": "toy", "problem": "What is 3 + 3?", "steps": ["oops", "3 + 3 = 6."],
     "label": -1, "final_answer_correct": True},
]


@pytest.fixture
def processbench_dir(tmp_path) -> Path:
    """A data folder laid out as ../shared/data is (processbench/gsm8k.json), holding four samples."""
    (tmp_path / "processbench").mkdir()
    (tmp_path / "processbench" / "gsm8k.json").write_text(json.dumps(PROCESSBENCH))
    return tmp_path


def test_the_toy_in_the_processbench_harness(processbench_dir):
    predictions: list[dict] = []
    result = run_processbench("gsm8k", make_localizer("toy"), data_dir=str(processbench_dir), predictions=predictions)
    assert [p["predicted"] for p in predictions] == [1, -1, -1, 0]
    assert (result.erroneous, result.correct, result.acc_erroneous, result.acc_correct) == (2, 2, 0.5, 0.5)
    assert (result.calls, result.tokens, result.no_verdict) == (4, 8, 0)
    rules_then_toy = run_processbench("gsm8k", Fallback(make_localizer("rules"), make_localizer("toy")),
                                      data_dir=str(processbench_dir))
    assert (rules_then_toy.acc_erroneous, rules_then_toy.acc_correct) == (1.0, 0.5)  # rules find gsm8k-2's 3 + 2 = 6
    with pytest.raises(ValueError, match="needs the problems' meta, which ProcessBench does not give"):
        run_processbench("gsm8k", make_localizer("exact"), data_dir=str(processbench_dir))


def test_the_toy_in_the_bench_command(processbench_dir, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "bench", "processbench", "--plugin", str(THIS),
                           "--localizer", "toy", "--subset", "gsm8k", "--data-dir", str(processbench_dir),
                           "--json", str(tmp_path / "bench.json")], check=False, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["subsets"][0]["samples"] == 4 and report["subsets"][0]["f1"] == 0.5
    assert report["average"]["average_f1"] == 0.5
    assert [p["predicted"] for p in report["predictions"]] == [1, -1, -1, 0]


def test_the_toy_as_the_second_stage_of_a_fallback():
    toy = make_localizer("toy")
    solutions = [
        Solution("false", "q", "Q", ["2 * 3 = 7\n", "oops"], answer_correct=False),  # the rules answer
        Solution("hit", "q", "Q", ["We add.\n", "oops\n"], answer_correct=False),  # rules: unknown -> the toy
        Solution("clean", "q", "Q", ["We add.\n", "So 3."]),  # rules: no_error -> the toy
        Solution("cut", "q", "Q", ["2 + 2 = 4\n", "So"], finished=False),  # rules: unfinished, kept
    ]
    found = Fallback(make_localizer("rules"), toy).locate(solutions)
    assert toy.batches == [["hit", "clean"]], "one batch, only what the rules did not locate"
    assert [(f.method, f.status, f.error_step) for f in found] == [
        ("rules", "error", 0), ("toy", "error", 1), ("toy", "no_error", -1), ("rules", "unfinished", None)]
    assert [f.calls for f in found] == [0, 1, 1, 0]

    first, then = make_localizer("toy", word="uh"), make_localizer("toy")
    both = Fallback(first, then).locate([Solution("a", "q", "Q", ["uh", "oops"]), Solution("b", "q", "Q", ["x", "oops"])])
    assert [(f.error_step, f.calls, f.tokens) for f in both] == [(0, 1, 2), (1, 2, 4)], "cost adds up where both ran"
    assert Fallback(first, then).name == "toy+toy"


def test_a_fallback_in_the_localize_stage_records_who_answered():
    table = rollouts_table()
    stage = LocalizeStage(Fallback(make_localizer("rules"), make_localizer("toy")))
    out = stage(table[table.correct.eq(False)]).set_index("rollout_id")
    assert out.method.to_dict() == {"hit": "toy", "clean": "toy", "cut": "rules", "false": "rules"}
    # a wrong rollout's "no false claim" is unknown for the rules, so the toy answers it
    assert out.status.to_dict() == {"hit": "error", "clean": "no_error", "cut": "unfinished", "false": "error"}
    assert stage.stats(out.reset_index())["status_by_method"]["toy"] == {"error": 1, "no_error": 1}


def test_plugins_load_from_a_module_path_or_a_file_once(tmp_path, monkeypatch):
    plugin = ("from stepdata.localize import register_localizer\n"
              "from stepdata.localize.rules import RulesLocalizer\n"
              "register_localizer('{name}')(lambda: RulesLocalizer())\n")
    (tmp_path / "my_plugin.py").write_text(plugin.format(name="from-module"))
    (tmp_path / "file_plugin.py").write_text(plugin.format(name="from-file"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_plugin("my_plugin")
        module = load_plugin(str(tmp_path / "file_plugin.py"))
        assert load_plugin(str(tmp_path / "file_plugin.py")) is module, "a file is imported once"
        assert {"from-module", "from-file"} <= set(available_localizers())
        with pytest.raises(ValueError, match="does not exist"):
            load_plugin(str(tmp_path / "missing.py"))
        with pytest.raises(ValueError, match="cannot import plugin module 'no_such_plugin'"):
            load_plugin("no_such_plugin")
    finally:
        unregister_localizer("from-module")
        unregister_localizer("from-file")
        sys.modules.pop("my_plugin", None)
