"""`stepdata selftrain` (DPO-ST, issue 16): two iterations end to end on the tiny random model, a changed setting
refused by name, a finished run that retrains nothing, and a run killed after its first DPO model that resumes to
the same rows without retraining what was finished."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import requires_train

from cli import main
from stepdata import read_table
from stepdata.recipe import load_recipe
from stepdata.selftrain import SelfTrainConfig
from stepdata.settings import config_from_mapping

REPO = Path(__file__).resolve().parents[1]
# tiny sizes: a random model gets nothing right, so every pair's chosen side is the reference and no
# pseudo-label exists (the loop must go on with the labelled data alone)
ARGS = ["--data", "embedded:3", "--eval-data", "embedded:2", "--backend", "hf", "--iterations", "2", "--samples", "2",
        "--max-tokens", "12", "--sft-max-steps", "1", "--dpo-max-steps", "1", "--batch-size", "2", "--grad-accum", "1",
        "--sample-batch-size", "2"]
TABLES = [f"iter{k}/{name}.parquet" for k in (1, 2)
          for name in ("samples", "pairs", "pseudo_samples", "pseudo", "sft_data")]
MODELS = ["iter0/model-sft"] + [f"iter{k}/model-{m}" for k in (1, 2) for m in ("dpo", "sft")]


def command(model: Path, out: Path, *more: str) -> list[str]:
    return ["selftrain", "--model", str(model), *ARGS, *more, "--out", str(out)]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("selftrain") / "run"
    result = CliRunner().invoke(main, command(tiny_model_dir, out))
    assert result.exit_code == 0, result.output
    return out, result.output


def rows(path: Path, out: Path) -> list[dict]:
    """A table's rows as JSON, with the run's own folder (in model paths) written as OUT."""
    text = read_table(path).to_json(orient="records", default_handler=str)
    return json.loads(text.replace(str(out).replace("/", "\\/"), "OUT"))


@pytest.mark.slow
@requires_train
def test_two_iterations_end_to_end(finished, tiny_model_dir):
    out, output = finished
    manifest = json.loads((out / "selftrain.json").read_text())
    assert manifest["status"] == "finished" and [r["iteration"] for r in manifest["iterations"]] == [1, 2]
    for model in MODELS:
        assert (out / model / "train_report.json").exists() and (out / model / "config.json").exists()
    assert manifest["final_model"] == str(out / "iter2/model-sft")
    problems = read_table(out / "problems.parquet", kind="problems")
    for k in (1, 2):
        record = manifest["iterations"][k - 1]
        samples = read_table(out / f"iter{k}/samples.parquet", kind="rollouts")
        assert len(samples) == 3 * 2 and record["samples"]["total"] == 6
        assert set(samples["model"]) == {str(out / f"iter{k - 1}/model-sft")}  # sampled from the last SFT model
        drawn = read_table(out / f"iter{k}/pseudo_samples.parquet", kind="rollouts")
        assert set(drawn["model"]) == {str(out / f"iter{k}/model-dpo")}  # pseudo-labels come from the DPO model
        pairs = read_table(out / f"iter{k}/pairs.parquet", kind="pairs")
        # nothing is right: the reference is every chosen side, so every question has pairs, at most 3
        assert samples["correct"].eq(False).all()
        assert (pairs["kind"] == "dpo").all() and pairs.groupby("problem_id").size().between(1, 3).all()
        assert set(pairs["problem_id"]) == set(problems["problem_id"])
        assert record["pairs"]["reference_chosen"] == len(pairs) == record["pairs"]["pairs"]
        # pooled: iteration 2's rejected sides come from both iterations' samples
        pooled = set().union(*(set(read_table(out / f"iter{j}/samples.parquet")["completion"]) for j in range(1, k + 1)))
        assert set(pairs["rejected"]) <= pooled
        dpo = json.loads((out / f"iter{k}/model-dpo/train_report.json").read_text())
        assert dpo["method"] == "dpo" and dpo["data"]["rows_out"] == len(pairs)
        assert dpo["hyperparameters"]["beta"] == 0.1 and dpo["hyperparameters"]["learning_rate"] == 3e-7
        assert dpo["model"] == str(out / f"iter{k - 1}/model-sft")
        # no pseudo-labels: SFT on the labelled data only, from the base model (DPO-ST's sft_init), and said so
        assert read_table(out / f"iter{k}/pseudo.parquet", kind="problems").empty
        sft_data = read_table(out / f"iter{k}/sft_data.parquet", kind="problems")
        assert list(sft_data["problem_id"]) == list(problems["problem_id"])
        sft = json.loads((out / f"iter{k}/model-sft/train_report.json").read_text())
        assert sft["model"] == str(Path(tiny_model_dir).resolve()) and sft["data"]["rows_out"] == 3
        assert any("SFT trained on the labelled data only" in note for note in record["notes"])
        for name in ("dpo", "sft"):
            evaluation = record[f"eval_{name}"]
            assert evaluation["problems"] == 2 and evaluation["accuracy"] == 0.0 and len(evaluation["ci95"]) == 2
    report = (out / "report.md").read_text()
    assert len(re.findall(r"^\| iter\d (sft|dpo)", report, re.MULTILINE)) == 5 and "SFT trained on the labelled data only" in report
    assert "0.0% (0.0-65.8) of 2" in report  # the Wilson interval of 0 of 2
    assert "iteration 2 sft: accuracy 0.0% on 2 problems" in output


@pytest.mark.slow
@requires_train
def test_a_changed_setting_is_refused_by_name_and_a_finished_run_retrains_nothing(finished, tiny_model_dir):
    out, _ = finished
    reports = {m: (out / m / "train_report.json").stat().st_mtime_ns for m in MODELS}
    tables = {t: (out / t).stat().st_mtime_ns for t in TABLES}
    changed = CliRunner().invoke(main, command(tiny_model_dir, out, "--temperature", "0.9", "--pairs-per-question", "2"))
    assert changed.exit_code == 1
    assert "temperature: 0.7 -> 0.9" in changed.output and "pairs_per_question: 3 -> 2" in changed.output
    again = CliRunner().invoke(main, command(tiny_model_dir, out))
    assert again.exit_code == 0, again.output
    assert reports == {m: (out / m / "train_report.json").stat().st_mtime_ns for m in MODELS}
    assert tables == {t: (out / t).stat().st_mtime_ns for t in TABLES}


@pytest.mark.slow
@requires_train
def test_a_run_killed_after_its_first_dpo_model_resumes_to_the_same_rows(finished, tiny_model_dir, tmp_path):
    reference, _ = finished
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "cli.py"), *command(tiny_model_dir, out)]
    log = tmp_path / "first.log"
    with log.open("w") as stream:
        process = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 300
        while not (out / "iter1/model-dpo/train_report.json").exists():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first DPO model did not appear in 300 s"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "iter2/model-sft/train_report.json").exists()  # killed mid-run
    before = {m: (out / m / "train_report.json").read_text() for m in MODELS if (out / m / "train_report.json").exists()}
    assert {"iter0/model-sft", "iter1/model-dpo"} <= set(before)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training dpo from model-sft on" in again.stderr  # iteration 2's DPO was trained by the resumed run
    for model, text in before.items():  # finished models were not trained again
        assert (out / model / "train_report.json").read_text() == text, model
    assert "iter1/model-dpo: training" not in again.stderr and "iter0/model-sft: training" not in again.stderr
    for table in ["problems.parquet", *TABLES]:
        assert rows(out / table, out) == rows(reference / table, reference), table
    manifest = json.loads((out / "selftrain.json").read_text())
    assert manifest["status"] == "finished" and manifest["final_model"] == str(out / "iter2/model-sft")


@pytest.mark.slow
@requires_train
def test_plain_self_training_from_a_given_warm_up(finished, tiny_model_dir, tmp_path):
    """method st: no pairs, no DPO; pseudo-labels sampled from the given warm-up, SFT from the base model."""
    reference, _ = finished
    warm = reference / "iter0/model-sft"
    out = tmp_path / "st"
    result = CliRunner().invoke(main, ["selftrain", "--model", str(tiny_model_dir), "--data", "embedded:3",
                                       "--backend", "hf", "--method", "st", "--iterations", "1", "--samples", "1",
                                       "--max-tokens", "8", "--sft-max-steps", "1", "--batch-size", "2",
                                       "--warmup-model", str(warm), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "iter0").exists() and not (out / "iter1/samples.parquet").exists()
    assert not (out / "iter1/model-dpo").exists() and not (out / "iter1/pairs.parquet").exists()
    drawn = read_table(out / "iter1/pseudo_samples.parquet", kind="rollouts")
    assert set(drawn["model"]) == {str(warm)}
    sft = json.loads((out / "iter1/model-sft/train_report.json").read_text())
    assert sft["model"] == str(Path(tiny_model_dir).resolve())
    assert "iter0 (given: model-sft)" in (out / "report.md").read_text()


def test_the_shipped_recipe_builds_a_selftrain_config():
    recipe = load_recipe("dpo_st", {"iterations": 2, "out": "runs/x"})
    step = next(s for s in recipe.steps if s["do"] == "selftrain")
    config = config_from_mapping(SelfTrainConfig, step["config"], "selftrain")
    assert config.iterations == 2 and config.method == "dpo-st" and config.pairs_per_question == 3


def test_calculator_reaches_every_sampling_of_the_loop_and_its_identity():
    on, off = SelfTrainConfig(calculator=True), SelfTrainConfig()
    assert on.sample_config(0).calculator and on.sample_config(1).sampling().calculator
    assert not off.sample_config(0).calculator
    assert on.identity()["calculator"] is True and off.identity()["calculator"] is False  # a changed setting
