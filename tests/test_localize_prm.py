"""The prm localizer on tiny random PRMs of each family (built offline): the first-error rule, per-row outcomes,
batching, the localize stage and the ProcessBench command on both engines; vLLM's scores equal transformers'."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import requires_torch, requires_vllm

from cli import main
from stepdata import read_table, write_table
from stepdata.localize import make_localizer
from stepdata.localize.base import Solution
from stepdata.localize.prm import PRMLocalizer
from stepdata.pipeline.localize import LocalizeConfig, LocalizeStage

pytestmark = requires_torch

FAMILIES = ("separator", "step_tag", "token_classify")
QUESTION = "Ada has 12 marbles and buys 5 more. Then she gives 3 away. How many does she have?"
STEPS = [" 12 + 5 = 17 marbles.", "\nStep 2: 17 - 3 = 14 marbles.", "\nStep 3: 14 / 2 = 7.", "\nStep 4: So 7.",
         "\nStep 5: The answer is 7."]


def solution(steps, solution_id="s", finished=True, question=QUESTION) -> Solution:
    return Solution(solution_id, "p", question, list(steps), finished=finished)


SOLUTIONS = [solution(STEPS, "five"), solution(STEPS[:1], "one"), solution(STEPS[:3], "three"),
             solution(["1."] * 100, "hundred"), solution(["The value is 12 + 5 = 17 marbles now."] * 100, "too-long")]


@pytest.fixture(scope="module")
def prms(tmp_path_factory) -> dict[str, str]:
    from tiny_models import (
        build_tiny_separator_prm,
        build_tiny_step_tag_prm,
        build_tiny_token_classify_prm,
    )

    root = tmp_path_factory.mktemp("prms")
    return {"separator": str(build_tiny_separator_prm(root / "separator")),
            "step_tag": str(build_tiny_step_tag_prm(root / "step_tag")),
            "token_classify": str(build_tiny_token_classify_prm(root / "token_classify"))}


@pytest.fixture(scope="module")
def hf(prms):
    """One transformers PRM per family (loaded on first use, shared by every test of this module)."""
    localizers = {family: make_localizer("prm", prm_model=prms[family], prm_family=family) for family in FAMILIES}
    yield localizers
    for localizer in localizers.values():
        localizer.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_one_and_a_hundred_steps_and_a_too_long_solution_is_a_row_outcome(hf, family):
    found = hf[family].locate(SOLUTIONS)
    by_id = dict(zip([s.solution_id for s in SOLUTIONS], found))
    for name, steps in (("five", 5), ("one", 1), ("three", 3), ("hundred", 100)):
        scores = by_id[name].evidence["step_scores"]
        assert len(scores) == steps and all(0 < s < 1 for s in scores)
        assert by_id[name].status in ("error", "no_error") and by_id[name].calls == 1 and by_id[name].tokens > steps
        assert {"threshold", "family", "engine", "model"} <= set(by_id[name].evidence)
    long = by_id["too-long"]
    assert (long.status, long.error_step, long.calls, long.evidence["step_scores"]) == ("unknown", None, 0, None)
    assert long.error is None, "too long is an outcome of the input, not a failure to retry"
    assert long.evidence["not_scored"].startswith("too long:") and "tokens > max_length 2048" in long.rationale
    # the same prefix of steps gets the same scores: a causal model reads step k before step k+1
    assert by_id["three"].evidence["step_scores"] == pytest.approx(by_id["five"].evidence["step_scores"][:3], abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scores_equal_one_by_one(hf, family):
    localizer = hf[family]
    solutions = SOLUTIONS[:4]
    one_by_one = [localizer.score([s])[0].scores for s in solutions]
    localizer.batch_size = 4
    try:
        batched = [r.scores for r in localizer.score(solutions)]
    finally:
        localizer.batch_size = 8
    for alone, together in zip(one_by_one, batched):
        assert together == pytest.approx(alone, abs=1e-5)


def test_the_first_step_below_the_threshold_is_the_error(hf, prms):
    scores = hf["token_classify"].score([solution(STEPS)])[0].scores

    def prm(threshold):
        return make_localizer("prm", prm_model=prms["token_classify"], prm_family="token_classify", threshold=threshold)

    # a later step scored lower than every step before it: a threshold between them puts the error there
    later = next(j for j in range(1, len(scores)) if scores[j] < min(scores[:j]))
    between = (scores[later] + min(scores[:later])) / 2
    found = prm(between).locate([solution(STEPS)])[0]
    assert (found.status, found.error_step) == ("error", later)
    assert found.confidence == pytest.approx(1 - scores[later])
    assert found.evidence["step_scores"] == pytest.approx(scores) and found.evidence["threshold"] == between
    assert f"step {later + 1}" in found.evidence["summary"]
    clean, cut = prm(min(scores)).locate([solution(STEPS), solution(STEPS, finished=False)])
    assert (clean.status, clean.error_step, clean.confidence) == ("no_error", -1, pytest.approx(min(scores)))
    assert (cut.status, cut.error_step) == ("unfinished", None), "no error in a cut solution is not 'no error'"
    assert prm(1.0).locate([solution(STEPS)])[0].error_step == 0


@pytest.mark.parametrize(("family", "marker"), [("separator", "<extra_0>"), ("step_tag", "ки")])
def test_a_marker_inside_model_text_does_not_shift_the_scores(hf, family, marker):
    steps = [STEPS[0], f"\nStep 2: 17 - 3 = 14 {marker} marbles.", STEPS[2]]
    written, plain = hf[family].score([solution(steps), solution([s.replace(marker, "") for s in steps])])
    assert len(written.scores) == 3
    assert written.scores == pytest.approx(plain.scores, abs=1e-5)


def test_the_token_classify_layout_is_trls(hf):
    _, form = hf["token_classify"].loaded
    tokenizer = form.tokenizer
    encoded = form.encode("Q?", ["a + b", "\nStep 2: c "])
    newline = tokenizer.encode("\n", add_special_tokens=False)
    pieces = [[tokenizer.bos_token_id], tokenizer.encode("Q?", add_special_tokens=False),
              tokenizer.encode("a + b", add_special_tokens=False), newline,
              tokenizer.encode("Step 2: c", add_special_tokens=False), newline]
    assert encoded.ids == [t for piece in pieces for t in piece]
    assert encoded.positions == [sum(map(len, pieces[:4])) - 1, len(encoded.ids) - 1]


def test_markers_that_are_not_one_token_and_a_missing_separator_are_clear_errors(prms):
    with pytest.raises(ValueError, match="prm_step_tag 'step-tag' is not one token"):
        make_localizer("prm", prm_model=prms["step_tag"], prm_family="step_tag", prm_step_tag="step-tag").locate(
            [solution(STEPS)])
    with pytest.raises(ValueError, match="no <extra_0> token.*--prm-separator"):
        make_localizer("prm", prm_model=prms["step_tag"], prm_family="separator").locate([solution(STEPS)])
    with pytest.raises(ValueError, match="needs prm_model"):
        make_localizer("prm", prm_model=None)
    with pytest.raises(ValueError, match="unknown prm_family"):
        make_localizer("prm", prm_model=prms["step_tag"], prm_family="orm")


def test_nan_scores_are_unknown_never_no_error(prms, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    broken = AutoModelForTokenClassification.from_pretrained(prms["token_classify"])
    broken.score.bias.data.fill_(float("nan"))
    broken.save_pretrained(tmp_path / "nan")
    AutoTokenizer.from_pretrained(prms["token_classify"]).save_pretrained(tmp_path / "nan")
    prm = make_localizer("prm", prm_model=str(tmp_path / "nan"), prm_family="token_classify")
    found = prm.locate([solution(STEPS)])[0]
    prm.close()
    assert (found.status, found.error, found.calls) == ("unknown", None, 0)
    assert found.evidence["not_scored"] == "the model gave NaN scores"


def test_a_localizer_travels_without_its_model(hf):
    localizer = hf["step_tag"]
    before = localizer.locate([solution(STEPS)])[0]
    copy = pickle.loads(pickle.dumps(localizer))
    assert copy._loaded is None and localizer._loaded is not None
    assert copy.locate([solution(STEPS)])[0].evidence["step_scores"] == before.evidence["step_scores"]
    assert copy.loaded is localizer.loaded, "the same PRM is loaded once per process"
    stage = LocalizeStage(config=LocalizeConfig(method="prm", prm_model=localizer.model, prm_family="step_tag"),
                          problems=pd.DataFrame({"problem_id": ["p"], "question": [QUESTION]}))
    assert not stage.config.uses_model() and not stage.has_engine
    assert pickle.loads(pickle.dumps(stage)).localizer.name == "prm"


ROLLOUT = {"prompt": "p", "completion": "c", "pred_answer": "7", "correct": False, "finish_reason": "stop",
           "model": "m", "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None}


def test_stepdata_localize_with_a_prm_end_to_end(prms, hf, tmp_path):
    problems = pd.DataFrame({"problem_id": ["p1", "p2"], "question": [QUESTION, "What is 2 * 9?"], "answer": ["14", "18"],
                             "solution": [None, None], "source": ["test", "test"], "meta": [None, None]})
    write_table(problems, tmp_path / "problems.parquet", "problems")
    rollouts = pd.DataFrame([
        ROLLOUT | {"problem_id": "p1", "rollout_id": "r1", "steps": STEPS},
        ROLLOUT | {"problem_id": "p1", "rollout_id": "r2", "steps": STEPS[:2], "finish_reason": "length"},
        ROLLOUT | {"problem_id": "p2", "rollout_id": "r3", "steps": ["2 * 9 = 18 ки <extra_0>"]},
        ROLLOUT | {"problem_id": "p2", "rollout_id": "r4", "steps": ["2 * 9 = 18."] * 300},  # too long
        ROLLOUT | {"problem_id": "p2", "rollout_id": "r5", "steps": ["2 * 9 = 18."], "correct": True},
    ])
    write_table(rollouts, tmp_path / "rollouts.parquet", "rollouts")
    out = tmp_path / "localized.parquet"
    result = CliRunner().invoke(main, ["localize", str(tmp_path / "rollouts.parquet"), "--problems",
                                       str(tmp_path / "problems.parquet"), "--method", "prm", "--prm-model",
                                       prms["token_classify"], "--prm-family", "token_classify", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = read_table(out, kind="localized").set_index("rollout_id")
    assert list(table.index) == ["r1", "r2", "r3", "r4"], "a right rollout is not localized"
    assert set(table.method) == {"prm"} and list(table.localizer_calls) == [1, 1, 1, 0]
    expected = hf["token_classify"].locate([solution(STEPS), solution(STEPS[:2], finished=False)])
    for rollout_id, found in zip(["r1", "r2"], expected):
        assert table.status[rollout_id] == found.status and json.loads(table.rationale[rollout_id]) == found.evidence
    assert table.status["r2"] in ("error", "unfinished")
    assert table.status["r4"] == "unknown" and "too long" in json.loads(table.rationale["r4"])["not_scored"]
    assert table.error.isna().all(), "no row is an error to retry: each was scored or cannot be"


def test_bench_processbench_with_a_prm_on_transformers(prms, hf, shared_data, tmp_path):
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "processbench", "--localizer", "prm", "--model", prms["step_tag"],
                                       "--backend", "hf", "--prm-family", "step_tag", "--subset", "gsm8k",
                                       "--limit", "4", "--data-dir", str(shared_data), "--json", str(report),
                                       "--sweep", "0.3,0.7"])
    assert result.exit_code == 0, result.output
    written = json.loads(report.read_text())
    bench = written["subsets"][0]
    assert bench["samples"] == 4 and bench["calls"] == 4 and bench["no_verdict"] == 0
    # the sweep re-applies thresholds to the stored step scores; its operating point is --threshold's default
    assert written["sweep"]["operating_threshold"] == 0.5 and "flatters" in result.output
    assert [row["threshold"] for row in written["sweep"]["rows"]] == [0.3, 0.5, 0.7]
    assert all(len(p["step_scores"]) >= 1 for p in written["predictions"])
    openai = CliRunner().invoke(main, ["bench", "processbench", "--localizer", "prm", "--model", prms["step_tag"],
                                       "--backend", "openai", "--limit", "4", "--data-dir", str(shared_data)])
    assert openai.exit_code == 2 and "cannot score steps" in openai.output


# -- vLLM: one pooling engine per family, shared by the tests below ---------------------------------------


@pytest.fixture(scope="module", params=FAMILIES)
def on_vllm(request, prms, hf):
    """(family, the vLLM PRM, the transformers PRM); the engine is released before the next family's starts."""
    family = request.param
    localizer = make_localizer("prm", prm_model=prms[family], prm_family=family, prm_engine="vllm")
    yield family, localizer, hf[family]
    localizer.close()


@requires_vllm
@pytest.mark.slow
def test_vllm_scores_equal_transformers(on_vllm):
    family, vllm_prm, hf_prm = on_vllm
    for on_vllm_engine, on_hf in zip(vllm_prm.locate(SOLUTIONS), hf_prm.locate(SOLUTIONS)):
        assert (on_vllm_engine.status, on_vllm_engine.error_step) == (on_hf.status, on_hf.error_step)
        assert on_vllm_engine.tokens == on_hf.tokens and on_vllm_engine.error == on_hf.error
        if on_hf.evidence["step_scores"] is not None:
            assert on_vllm_engine.evidence["step_scores"] == pytest.approx(on_hf.evidence["step_scores"], abs=1e-4)
    assert vllm_prm.loaded[0].engine == "vllm" and isinstance(vllm_prm, PRMLocalizer)


@requires_vllm
@pytest.mark.slow
def test_bench_processbench_with_a_prm_on_vllm(on_vllm, prms, shared_data, tmp_path):
    family = on_vllm[0]
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "processbench", "--localizer", "prm", "--model", prms[family],
                                       "--backend", "vllm", "--prm-family", family, "--subset", "gsm8k",
                                       "--limit", "4", "--data-dir", str(shared_data), "--json", str(report)])
    assert result.exit_code == 0, result.output
    bench = json.loads(report.read_text())["subsets"][0]
    assert bench["samples"] == 4 and bench["calls"] == 4 and bench["no_verdict"] == 0
