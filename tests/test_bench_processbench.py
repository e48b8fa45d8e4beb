"""ProcessBench scoring: the four subsets by name, files of its format, the average F1, one protocol for every
localizer (a localizer with no prediction is wrong on both subsets, never a free "-1"), and the judge's
published decoding (greedy; 8 votes at 1.0 / 0.9) through the bench command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer

from cli import main
from stepdata.bench.processbench import run_processbench
from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize import make_localizer


class UnreadableJudge(Generator):
    """A judge that never boxes an index (a wrong template, a model that rambles)."""

    backend = "scripted"

    def _generate(self, requests, sampling, progress, stats):
        return [GenerationResult(r.request_id, "prompt", 50,
                                 [Completion("Hmm, hard to say.", "stop", 5) for _ in range(sampling.n)])
                for r in requests]


def test_an_unreadable_judge_scores_zero_on_correct_samples(shared_data):
    localizer = make_localizer("judge", generator=UnreadableJudge("judge"), votes=3)
    result = run_processbench("gsm8k", localizer, data_dir=shared_data, limit=10)
    assert (result.erroneous, result.correct) == (5, 5)
    assert result.acc_correct == 0.0 and result.acc_erroneous == 0.0 and result.f1 == 0.0
    assert result.unreadable == 30 and result.no_verdict == 10


def test_rules_then_an_unreadable_judge_keeps_only_the_rules_answers(shared_data):
    predictions: list[dict] = []
    localizer = make_localizer("rules+judge", generator=UnreadableJudge("judge"), votes=2)
    result = run_processbench("gsm8k", localizer, data_dir=shared_data, limit=40, predictions=predictions)
    from_rules = [p for p in predictions if p["predicted"] is not None]
    assert all(p["predicted"] >= 0 for p in from_rules), "the rules answer only where they find a false claim"
    assert result.acc_correct == 0.0  # nothing says "no error": the judge was never read
    assert result.no_verdict == len(predictions) - len(from_rules) > 0


@pytest.mark.parametrize("subset", ["gsm8k", "math"])
def test_rules_no_false_claim_is_a_real_minus_one(shared_data, subset):
    predictions: list[dict] = []
    result = run_processbench(subset, make_localizer("rules"), data_dir=shared_data, limit=20, predictions=predictions)
    assert result.no_verdict == 0
    assert all(p["predicted"] is not None for p in predictions)
    assert result.acc_correct >= 0.9


# Samples in ProcessBench's format whose rules answer is known: A and B right (an arithmetic error found; none
# claimed and none there), C wrong (its error is not arithmetic), D wrong (a false claim in a sample labelled
# correct). On [A, B, C, D] the rules score 1/2 on each side (F1 0.5); on [A, B] 1 (F1 1).
A = {"id": "a", "generator": "hand", "problem": "What is 3 + 4?", "steps": ["3 + 4 = 8.", "So 8."], "label": 0,
     "final_answer_correct": False}
B = {"id": "b", "generator": "hand", "problem": "What is 3 + 4?", "steps": ["3 + 4 = 7.", "So 7."], "label": -1,
     "final_answer_correct": True}
C = {"id": "c", "generator": "hand", "problem": "Double 5.", "steps": ["We guess 6.", "6 * 2 = 12."], "label": 0,
     "final_answer_correct": False}
D = {"id": "d", "generator": "hand", "problem": "Square 3.", "steps": ["3 * 3 = 10.", "So 9."], "label": -1,
     "final_answer_correct": True}


def bench(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["bench", "processbench", *args], env=env)


def test_every_subset_by_name_absent_then_present(tmp_path):
    folder = tmp_path / "data"
    (folder / "processbench").mkdir(parents=True)
    absent = bench("--data-dir", str(folder), "--subset", "olympiadbench")
    assert absent.exit_code == 1
    assert f"{folder}/processbench/olympiadbench.json does not exist" in absent.output
    none = bench("--data-dir", str(folder))
    assert none.exit_code == 1 and "no ProcessBench subset found" in none.output
    assert f"{folder}/processbench/omnimath.json" in none.output

    (folder / "processbench" / "olympiadbench.json").write_text(json.dumps([A, B, C, D]))
    (folder / "processbench" / "omnimath.json").write_text(json.dumps([A, B]))
    done = bench("--data-dir", str(folder), "--json", str(tmp_path / "b.json"))
    assert done.exit_code == 0, done.output
    assert f"skipped gsm8k: {folder}/processbench/gsm8k.json is not there" in done.output
    assert "skipped math:" in done.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(s["subset"], s["samples"], s["f1"]) for s in report["subsets"]] == [("olympiadbench", 4, 0.5),
                                                                                 ("omnimath", 2, 1.0)]
    assert report["average"]["average_f1"] == pytest.approx(0.75) and report["average"]["samples"] == 6
    rows = [line for line in done.output.splitlines() if line.startswith("|")]
    assert rows[-1].startswith("| average F1") and "  75.0 |" in rows[-1]
    assert "ProcessBench's published average covers its four subsets" in done.output
    assert set(report["skipped"]) == {"gsm8k", "math"}
    assert [p["id"] for p in report["predictions"]] == ["a", "b", "c", "d", "a", "b"]

    named = bench("--data-dir", str(folder), "--subset", "omnimath", "--json", str(tmp_path / "one.json"))
    assert named.exit_code == 0 and "skipped" not in named.output
    assert [s["subset"] for s in json.loads((tmp_path / "one.json").read_text())["subsets"]] == ["omnimath"]


def test_the_shared_data_by_default_and_rules_on_the_full_gsm8k_subset(shared_data, tmp_path):
    done = bench("--data-dir", str(shared_data), "--json", str(tmp_path / "b.json"))
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(s["subset"], s["samples"]) for s in report["subsets"]] == [("gsm8k", 400), ("math", 1000)]
    assert set(report["skipped"]) == {"olympiadbench", "omnimath"}
    f1s = [s["f1"] for s in report["subsets"]]
    assert report["average"]["average_f1"] == pytest.approx(sum(f1s) / 2)
    gsm8k = run_processbench("gsm8k", make_localizer("rules"), data_dir=shared_data)
    assert (report["subsets"][0]["acc_erroneous"], report["subsets"][0]["acc_correct"]) == \
        (gsm8k.acc_erroneous, gsm8k.acc_correct)
    assert report["settings"] == {"method": "rules", "rules_tolerance": "written"}


def test_any_file_in_processbench_format(tmp_path):
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([A, B, C, D]))
    lines = tmp_path / "mine.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in [A, B]))
    done = bench("--data", str(listed), "--data", str(lines), "--json", str(tmp_path / "b.json"))
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(s["subset"], s["f1"], s["source"]) for s in report["subsets"]] == [
        ("listed", 0.5, str(listed)), ("mine", 1.0, str(lines))]
    assert report["average"]["average_f1"] == pytest.approx(0.75)
    bench("--data", str(listed), "--limit", "2", "--json", str(tmp_path / "l.json"))
    assert [p["id"] for p in json.loads((tmp_path / "l.json").read_text())["predictions"]] == ["a", "b"]
    (tmp_path / "other").mkdir()
    same_stem = (tmp_path / "other" / "mine.jsonl")
    same_stem.write_text(lines.read_text())
    twice = bench("--data", str(lines), "--data", str(same_stem))
    assert twice.exit_code == 1 and "['mine'] given twice" in twice.output


@pytest.mark.parametrize(
    "record, field, message",
    [
        (A | {"label": 5}, "label", "expected an index in [-1, 1], found 5 (record id 'bad')"),
        (A | {"steps": "3 + 4 = 8."}, "steps", "expected a list of strings (record id 'bad')"),
        (A | {"steps": []}, "steps", "empty"),
        ({k: v for k, v in A.items() if k != "problem"}, "problem", "missing (record id 'bad')"),
        ({k: v for k, v in A.items() if k != "label"}, "label", "found None"),
    ],
)
def test_a_bad_record_is_named_with_its_field_before_anything_is_scored(tmp_path, record, field, message):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(A) + "\n" + json.dumps(record | {"id": "bad"}) + "\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([A, B]))
    done = bench("--data", str(good), "--data", str(path))
    assert done.exit_code == 1 and "| average" not in done.output
    assert f"{path}, line 2, field '{field}'" in done.output and message in done.output


def test_judge_decoding_defaults_through_the_bench(tmp_path):
    """One vote is greedy (ProcessBench's protocol); 8 votes sample at 1.0 / 0.9; values given win."""
    data = tmp_path / "two.json"
    data.write_text(json.dumps([A, B]))
    sent: list[dict] = []

    def reply(body, index):
        sent.append(body)
        return "Paragraph 0 adds wrongly: 3 + 4 is 7. \\boxed{0}"

    env = {"OPENAI_API_KEY": "x"}
    with FaultyOpenAIServer(reply_body=reply) as server:
        base = ["--localizer", "judge", "--backend", "openai", "--model", "judge", "--base-url", server.base_url,
                "--data", str(data)]
        runs = {}
        for name, extra in {"default": [], "votes": ["--votes", "8"],
                            "given": ["--votes", "8", "--judge-temperature", "0.5", "--judge-top-p", "0.7",
                                      "--judge-max-tokens", "300"]}.items():
            sent.clear()
            done = bench(*base, *extra, env=env)
            assert done.exit_code == 0, done.output
            runs[name] = ({(b["n"], b["temperature"], b["top_p"], b["max_tokens"]) for b in sent}, done.output)
        refused = bench(*base, "--votes", "8", "--judge-temperature", "0", env=env)
    assert runs["default"][0] == {(1, 0.0, 1.0, 8192)}
    assert "1 vote, greedy, at most 8192 tokens" in runs["default"][1]
    assert runs["votes"][0] == {(8, 1.0, 0.9, 8192)}
    assert "8 votes, temperature 1, top_p 0.9" in runs["votes"][1]
    assert runs["given"][0] == {(8, 0.5, 0.7, 300)}
    assert refused.exit_code == 2 and "--judge-temperature" in refused.output and "greedy" in refused.output
    # the judge says step 0 for both: right on the erroneous sample, wrong on the correct one
    assert "|     100.0 |       0.0 |   0.0 |" in runs["default"][1]


@requires_torch
def test_a_tiny_judge_end_to_end_on_hf_is_counted_unreadable(tiny_model_dir, shared_data, tmp_path):
    """A random tiny model never answers in the protocol's form: every reply is unreadable, every sample has no
    prediction (wrong on both sides), and nothing is guessed."""
    template = tmp_path / "critique.txt"
    template.write_text("Problem: {{question}}\n\n{{tagged_steps}}\n\nGive the first wrong paragraph in \\boxed{}.")
    done = bench("--localizer", "judge", "--backend", "hf", "--model", str(tiny_model_dir), "--engine-option",
                 "max_model_len=2048", "--data-dir", str(shared_data), "--subset", "gsm8k", "--limit", "4",
                 "--judge-max-tokens", "12", "--judge-template", str(template), "--json", str(tmp_path / "b.json"))
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "b.json").read_text())
    result = report["subsets"][0]
    assert (result["samples"], result["erroneous"], result["correct"]) == (4, 2, 2)
    assert (result["calls"], result["unreadable"], result["no_verdict"], result["errors"]) == (4, 4, 4, 0)
    assert result["f1"] == 0.0 and result["tokens"] > 4 * 12
    assert all(p["predicted"] is None and p["status"] == "unknown" and p["votes"] == [] and len(p["replies"]) == 1
               for p in report["predictions"])
    settings = report["settings"]
    assert (settings["votes"], settings["judge_temperature"], settings["judge_max_tokens"]) == (1, 0.0, 12)
    assert settings["judge_template"]["path"] == str(template) and len(settings["judge_template"]["sha256"]) == 64
    assert "gsm8k: 4 of 4 samples got no prediction (scored wrong on both sides); 4 unreadable judge replies" \
        in done.output
