"""`stepdata eval`: scores, error rows that never count as correct, several models in one call."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import requires_torch

from cli import main
from stepdata import make_problems
from stepdata.answers import Verdict
from stepdata.evaluate import (
    EVAL_SEED,
    evaluate_model,
    format_table,
    load_eval_problems,
    majority_correct,
    pass_at_k,
)
from stepdata.generation import Completion, GenerationResult, Generator, SamplingConfig

FOUR = " 2 + 2 = 4.\nStep 2: The answer is 4."


class Scripted(Generator):
    """Answers every request with fixed texts (one per sample); a question containing 'fail' fails."""

    backend = "scripted"

    def __init__(self, texts=(FOUR,), raise_on=None):
        super().__init__("scripted-model")
        self.texts, self.raise_on = texts, raise_on

    def _generate(self, requests, sampling, progress, stats):
        results = []
        for request in requests:
            question = request.messages[0]["content"]
            if self.raise_on and self.raise_on in question:
                raise RuntimeError("engine crashed")
            if "fail" in question:
                results.append(GenerationResult(request.request_id, None, None, error="out of retries"))
                continue
            completions = [Completion(self.texts[i % len(self.texts)], "stop", 7) for i in range(sampling.n)]
            results.append(GenerationResult(request.request_id, "prompt", 5, completions=completions))
        return results


def problems(*items):
    return pd.DataFrame([{"problem_id": pid, "question": q, "answer": gold, "solution": None, "source": "t",
                          "meta": None} for pid, q, gold in items])


def test_correct_and_wrong_are_counted_and_errors_never_count_as_correct():
    table = problems(("right", "What is 2 + 2?", "4"), ("wrong", "What is 2 + 3?", "5"),
                     ("failed", "please fail", "4"), ("nogold", "What is 2 + 2 again?", None))
    result = evaluate_model(Scripted(), table, data="unit")
    rows = result.rows.set_index("problem_id")
    assert rows.loc["right", "correct"] == True and rows.loc["right", "pred_answer"] == "4"
    assert rows.loc["wrong", "correct"] == False
    assert pd.isna(rows.loc["failed", "correct"]) and rows.loc["failed", "error"].startswith("generation")
    assert pd.isna(rows.loc["nogold", "correct"]) and rows.loc["nogold", "error"].startswith("gold_answer")
    assert (result.samples, result.correct, result.judged, result.errors) == (4, 1, 2, 2)
    assert result.accuracy == 0.25 == result.rows["correct"].fillna(False).astype(bool).mean()
    assert result.accuracy_judged == 0.5 and result.error_kinds == {"generation": 1, "gold_answer": 1}
    assert rows.loc["right", "source"] == "t" and rows.loc["wrong", "gold"] == "5"
    assert result.completion_tokens == 21 and result.prompt_tokens == 15


def test_a_timed_out_answer_check_is_an_error_not_a_verdict(monkeypatch):
    from stepdata.answers import policy

    monkeypatch.setattr(policy, "check_answers",
                        lambda pairs, config: [Verdict(False, "timeout", "math-verify", "5s") for _ in pairs])
    result = evaluate_model(Scripted(), problems(("a", "What is 2 + 2?", "4")))
    assert result.rows["error"].iloc[0].startswith("answer_check: timeout")
    assert pd.isna(result.rows["correct"].iloc[0]) and result.accuracy == 0.0 and result.accuracy_judged is None


def test_a_crashing_batch_and_a_model_that_does_not_load_are_rows_not_crashes(tmp_path):
    table = problems(("a", "What is 2 + 2?", "4"), ("b", "boom: what is 2 + 2?", "4"), ("c", "2 + 2?", "4"))
    result = evaluate_model(Scripted(raise_on="boom"), table, batch_size=1)
    assert result.rows["correct"].isna().tolist() == [False, True, False] and result.correct == 2
    assert result.errors == 1 and "engine crashed" in result.rows["error"].iloc[1]

    missing = evaluate_model(str(tmp_path / "no-such-model"), table, backend="hf", make_engine=lambda m: 1 / 0)
    assert missing.errors == 3 and missing.correct == 0 and missing.error_kinds == {"load": 3}


def test_samples_give_pass_at_k_and_majority_vote():
    assert pass_at_k(3, 1, 1) == pytest.approx(1 / 3) and pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert majority_correct(["4", "5", "5.0"], [True, False, False]) is False
    assert majority_correct(["4", None, "$4$", "7"], [True, None, True, False]) is True
    assert majority_correct([None, None], [None, None]) is False

    texts = (FOUR, "The answer is 5.", "The answer is 5.")  # per problem: one sample says 4, two say 5
    table = problems(("four", "What is 2 + 2?", "4"), ("five", "What is 2 + 3?", "5"))
    result = evaluate_model(Scripted(texts), table, sampling=SamplingConfig(n=3, temperature=1.0, max_tokens=8))
    assert result.samples == 6 and result.accuracy == 0.5
    assert result.pass_at_k == {"pass@1": 0.5, "pass@3": 1.0} and result.maj_at_n == 0.5
    assert sorted(result.rows["sample"].unique()) == [0, 1, 2]
    header, _, line = format_table([result]).splitlines()
    assert "pass@n" in header and "maj@n" in header and "|    50.0% | 100.0% | 50.0% |" in line


def test_eval_problems_resolution(tmp_path):
    held_out, label = load_eval_problems("embedded", n_problems=5, min_steps=2, max_steps=3)
    assert len(held_out) == 5 and str(EVAL_SEED) in label
    assert not set(held_out.question) & set(make_problems(5, seed=0, min_steps=2, max_steps=3).question)
    assert len(load_eval_problems("embedded:8", limit=3)[0]) == 3
    with pytest.raises(ValueError, match="no split"):
        load_eval_problems("svamp", split="train", data_dir=tmp_path)
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "What is 1 + 1?", "a": "2"}\n')
    mine, _ = load_eval_problems(str(path), columns={"question": "q", "answer": "a"})
    assert mine.answer.tolist() == ["2"]


@requires_torch
def test_cli_two_models_on_embedded_problems(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    model = str(tiny_model_dir)
    result = CliRunner().invoke(main, ["eval", "--model", model, "--model", model, "--data", "embedded",
                                       "--n-problems", "3", "--max-tokens", "6", "--backend", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith(model)]
    assert len(table) == 2 and "vs first" in result.output
    report = json.loads((out / "eval.json").read_text())
    assert [r["problems"] for r in report["results"]] == [3, 3] and report["config"]["seed"] == EVAL_SEED
    for summary in report["results"]:
        rows = pd.read_parquet(out / summary["rows_file"])
        assert len(rows) == 3 and rows["completion"].notna().all() and summary["backend"] == "hf"
        assert summary["accuracy"] == round(rows["correct"].fillna(False).astype(bool).mean(), 4)
        assert summary["completion_tokens"] == rows["completion_tokens"].sum() > 0
    # greedy decoding is deterministic: the same model scores the same twice
    assert report["results"][0]["accuracy"] == report["results"][1]["accuracy"]


@requires_torch
def test_cli_gsm8k_limit(tiny_model_dir, shared_data, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--model", str(tiny_model_dir), "--data", "gsm8k", "--limit", "4",
                                       "--data-dir", str(shared_data), "--max-tokens", "4", "--backend", "hf",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval.json").read_text())["results"][0]
    assert summary["data"] == "gsm8k:test" and summary["problems"] == 4 and summary["truncated"] == 4
    rows = pd.read_parquet(tmp_path / summary["rows_file"])
    assert set(rows.source) == {"gsm8k-test"} and rows.gold.notna().all()


def test_cli_refuses_bad_options():
    runner = CliRunner()
    assert runner.invoke(main, ["eval", "--model", "m", "--data", "embedded", "--n", "2"]).exit_code != 0  # greedy n>1
    refused = runner.invoke(main, ["eval", "--model", "m", "--data", "embedded", "--template", "nope"])
    assert refused.exit_code != 0 and "no prompt named" in refused.output
    bad_option = runner.invoke(main, ["eval", "--model", "m", "--data", "embedded", "--engine-option", "x"])
    assert bad_option.exit_code != 0 and "is not KEY=VALUE" in bad_option.output
