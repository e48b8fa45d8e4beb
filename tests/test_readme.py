"""The README's two commands stay true: CI runs exactly them, and the main-job part works."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires_train

from stepdata import read_table

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Set-up and tests.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README has no set-up block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_setup_and_test_commands_and_ci_runs_them():
    setup_and_main, tests = readme_commands()
    setup, _, main_job = setup_and_main.partition(" && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert setup == "bash setup.sh" and setup in ci
    assert tests in ci
    assert main_job.startswith(".venv/bin/stepdata ")


def check_quickstart_output(out: Path) -> dict:
    """What the main job must leave behind: both kinds of pairs, exports, the report, the summary."""
    summary = json.loads((out / "quickstart.json").read_text())
    pairs = read_table(out / "pairs.parquet", kind="pairs")
    assert summary["pairs"]["total"] == len(pairs) > 0
    kinds = set(pairs["kind"])
    assert {"step-dpo", "scdpo"} <= kinds, kinds
    assert (out / "report.html").read_text().count("class=\"sd-pair\"") == len(pairs)
    assert (out / "export" / "train.step-dpo.jsonl").exists()
    assert summary["chosen_confirmed_by_exact_checker"]["of"] > 0
    # every rollout is counted once by its label, unfinished ones included
    counts = summary["rollouts"]
    assert sum(counts[k] for k in ("correct", "wrong", "no_answer", "unfinished", "errors")) == counts["total"]
    assert counts["total"] == len(read_table(out / "rollouts.parquet", kind="rollouts"))
    assert summary["pairs"]["by_kind"] == pairs["kind"].value_counts().to_dict()
    # the SFT warm-up makes SmolLM2 useful: it solves held-out problems it did not solve as shipped
    assert summary["eval_heldout"]["accuracy"] > summary["eval_base"]["accuracy"] + 0.1
    return summary


def test_ci_runs_the_readme_main_job():
    """CI runs the README's main job before the tests (its full size takes minutes, so it is not
    repeated here); the README's order is the same, so its output must be there and is checked."""
    setup_and_main, _ = readme_commands()
    main_job = setup_and_main.partition(" && ")[2]
    assert main_job in (REPO / ".ci" / "run").read_text()
    out = REPO / shlex.split(main_job)[shlex.split(main_job).index("--out") + 1]
    if not (out / "quickstart.json").exists():
        pytest.fail(f"{out / 'quickstart.json'} is missing: run the README's first command (the main job) "
                    "before the tests, as CI does")
    check_quickstart_output(out)


@pytest.mark.slow
@requires_train
def test_the_main_job_runs_end_to_end_on_a_tiny_model_and_resumes(tmp_path, tiny_model_dir):
    """The README's main command through the CLI in a fresh folder, on the tiny random model (its
    pairs are few or none: the wiring, the empty cases and the resume are what is tested here; CI
    runs the real size with SmolLM2 before the tests)."""
    setup_and_main, _ = readme_commands()
    main_job = shlex.split(setup_and_main.partition(" && ")[2])
    assert main_job[1] == "quickstart"
    command = [sys.executable, str(REPO / "cli.py"), "quickstart", "--out", "qs", "--problems", "6",
               "--samples", "2", "--sft-steps", "2", "--eval-problems", "4", "--model", str(tiny_model_dir), "--backend", "hf"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "qs"
    summary = json.loads((out / "quickstart.json").read_text())
    assert summary["pairs"]["total"] == len(read_table(out / "pairs.parquet", kind="pairs"))
    assert len(read_table(out / "rollouts.parquet", kind="rollouts")) == 12
    assert (out / "report.html").exists() and (out / "model-sft" / "train_report.json").exists()
    # started again with the same command, it resumes: every stage is skipped, the same pairs come out
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((out / "rollouts.parquet.summary.json").read_text())
    assert resumed["batches_run"] == 0 and resumed["batches_skipped"] == resumed["batches_total"] > 0
    assert "sft warm-up: done" in again.stderr and "Writing model shards" not in again.stderr
    assert json.loads((out / "quickstart.json").read_text())["pairs"] == summary["pairs"]
