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


TABLES = ("problems.parquet", "rollouts.parquet", "localized.parquet", "pairs_stepdpo.parquet", "pairs_scdpo.parquet",
          "pairs.parquet")


def check_quickstart_output(out: Path) -> dict:
    """What the main job must leave behind: both kinds of pairs, exports, the report, the summary."""
    summary = json.loads((out / "quickstart.json").read_text())
    pairs = read_table(out / "pairs.parquet", kind="pairs")
    assert summary["export"]["total"] == summary["pairs"]["total"] == len(pairs) > 0
    kinds = set(pairs["kind"])
    assert {"step-dpo", "scdpo"} <= kinds, kinds
    assert (out / "report.html").read_text().count("class=\"sd-pair\"") == len(pairs)
    assert (out / "export" / "train.step-dpo.jsonl").exists()
    assert summary["export"]["chosen_confirmed"]["of"] > 0
    # every rollout is counted once by its label, unfinished ones included
    counts = summary["sample"]["labels"]
    assert sum(counts[k] for k in ("correct", "wrong", "no_answer", "unfinished", "errors")) == counts["total"]
    assert counts["total"] == len(read_table(out / "rollouts.parquet", kind="rollouts"))
    assert summary["export"]["by_kind"] == pairs["kind"].value_counts().to_dict()
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
    tables = {name: read_table(out / name) for name in TABLES}
    # started again with the same command, it resumes: every stage is found finished, the same pairs come out
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("sample", "localize", "rectify", "synthesize"):
        assert f"{stage}: " in again.stderr and "is already finished" in again.stderr, again.stderr[-3000:]
    assert "sft: done" in again.stderr and "Writing model shards" not in again.stderr
    assert json.loads((out / "quickstart.json").read_text())["pairs"] == summary["pairs"]

    # the quickstart is the shipped recipe: `stepdata run` on a copy of it, with the same vars, makes the same tables
    recipe = tmp_path / "my_recipe.yaml"
    shown = subprocess.run([sys.executable, str(REPO / "cli.py"), "recipe", "show", "quickstart"], capture_output=True,
                           text=True, check=True)
    recipe.write_text(shown.stdout)
    sets = ["out=ran", "problems=6", "samples=2", "sft_steps=2", "eval_problems=4", f"model={tiny_model_dir}",
            "backend=hf"]
    ran = subprocess.run([sys.executable, str(REPO / "cli.py"), "run", str(recipe), *[a for s in sets for a in ("--set", s)]],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for name, table in tables.items():
        other = read_table(tmp_path / "ran" / name)
        # the same rows; the tables' run configs differ only in where they were written
        assert table.drop(columns=[c for c in ("model",) if c in table]).equals(
            other.drop(columns=[c for c in ("model",) if c in other])), name
