"""`stepdata experiment`: refused up front when it cannot run; the small budget end to end, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, requires_train

from cli import main
from stepdata.experiment import ARM_NAMES, ExperimentConfig, load_experiment
from stepdata.experiment.eval_sets import check_eval_sets
from stepdata.recipe import RecipeError, load_recipe
from stepdata.settings import SettingError

ARMS = list(ARM_NAMES)  # every arm, DPO-ST's self-training loop included


def test_settings_are_refused_naming_them():
    with pytest.raises(SettingError, match="unknown arm"):
        ExperimentConfig(arms=("dpo", "stepdpo-ood"))
    with pytest.raises(SettingError, match="maj_sets"):
        ExperimentConfig(eval_sets=("embedded",), maj_sets=("svamp",))
    small = ExperimentConfig(budget="small")
    assert small.steps == 2 and small.eval_sets == ("embedded", "embedded-long")  # sizes from the budget
    assert ExperimentConfig(budget="small", steps=5).steps == 5  # a size given wins over the budget
    seeded = ExperimentConfig(budget="small", seeds=(3, 5))
    assert seeded.seeds_of("stepdpo") == (3, 5) and seeded.seeds_of("sdpo") == (3,)  # main arms: every seed


def test_the_maj_samples_top_p_is_recorded_only_when_it_differs_from_the_value_older_records_used():
    from stepdata.experiment.config import MAJ_TOP_P_BEFORE
    from stepdata.experiment.evaluation import eval_settings

    def settings(**kwargs):
        config = ExperimentConfig(budget="small", **kwargs)
        return {name: eval_settings(config, "start", {}, name, {}) for name in ("embedded", "embedded-long")}

    before = settings(maj_top_p=MAJ_TOP_P_BEFORE)  # what every record made before the setting existed holds
    assert "maj_top_p" not in before["embedded"]  # so those runs resume with --set maj_top_p=0.95
    plain = settings()
    assert ExperimentConfig().maj_top_p == 1.0 and plain["embedded"]["maj_top_p"] == 1.0
    assert plain["embedded-long"] == before["embedded-long"]  # greedy-only sets do not depend on it
    with pytest.raises(SettingError, match="maj_top_p"):
        ExperimentConfig(maj_top_p=1.5)


def test_an_unknown_eval_set_or_a_missing_file_is_named_before_any_work():
    problems = check_eval_sets(ExperimentConfig(eval_sets=("embedded", "svmap"), maj_sets=("embedded",)))
    assert len(problems) == 1 and "unknown eval set 'svmap'" in problems[0] and "svamp" in problems[0]
    missing = check_eval_sets(ExperimentConfig(eval_sets=("gsm8k",), maj_sets=(), data_dir="/nonexistent"))
    assert len(missing) == 1 and "eval set 'gsm8k'" in missing[0] and "does not exist" in missing[0]
    assert check_eval_sets(ExperimentConfig(eval_sets=("embedded-long",), maj_sets=(), max_steps=3)) == []


def test_the_command_refuses_an_experiment_that_cannot_start(tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["experiment", "--out", str(tmp_path / "x"), "--set", f"model={tmp_path}",
                                "--set", "eval_sets=embedded,svmap", "--set", "maj_sets=embedded"])
    assert done.exit_code == 1
    assert "unknown eval set 'svmap'" in done.output and "neither a model folder" in done.output
    assert not (tmp_path / "x").exists()  # nothing was started
    done = runner.invoke(main, ["experiment", "--plan", "--set", f"model={tmp_path}", "--set",
                                "dpo_st_options=pairs_per_questoin=2"])
    assert done.exit_code == 1 and "arm dpo_st: dpo_st_options ['pairs_per_questoin']" in done.output


def test_the_shipped_recipe_is_an_experiment_recipe_not_a_pipeline():
    config, out = load_experiment("experiment")
    assert config.budget == "full" and set(config.arms) == set(ARM_NAMES) and out == Path("runs/experiment")
    with pytest.raises(RecipeError, match="stepdata experiment"):
        load_recipe("experiment")
    with pytest.raises(ValueError, match="unknown setting"):
        load_experiment("experiment", {"stepz": 3})
    # --set values arrive as YAML scalars: one seed is a list of one, an empty list is none
    config, _ = load_experiment("experiment", {"seeds": 7, "arms": "dpo,stepdpo", "maj_sets": ""}, budget="small")
    assert config.seeds == (7,) and config.arms == ("dpo", "stepdpo") and config.maj_sets == ()
    # a backend given on the command line wins over the recipe's
    assert config.backend == "auto" and load_experiment("experiment", {"backend": "hf"}, budget="small")[0].backend == "hf"


@pytest.fixture(scope="module")
def memorizing_policy(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny random model after a short SFT on the experiment's own training problems: it has half learnt
    them, so sampling at T=0.8 gives right and wrong solutions and every kind of pair can be made (a random model
    gets nothing right, and an untrained held-out accuracy of 0 is fine here: the wiring is what is tested)."""
    from stepdata.embedded import make_problems
    from trainers.train import train

    out = tmp_path_factory.mktemp("policy")
    problems = make_problems(PROBLEMS, seed=2, min_steps=2, max_steps=3)  # the experiment's: seed 0 + 2
    train("sft", str(tiny_model_dir), problems, out, max_steps=44, learning_rate=3e-3, per_device_train_batch_size=8,
          warmup_steps=0.05)
    return out


PROBLEMS = 8
SIZES = ["seeds=0,1", "problems=8", "samples=4", "rectify_samples=2", "rectify_per_problem=1", "synth_rounds=1",
         "max_tokens=80", "batch_size=2", "eval_problems=3", "eval_max_tokens=24", "maj_k=2", "bootstrap=200"]


def _command(out: Path, policy: Path, *more: str) -> list[str]:
    sets = [f"model={policy}", "backend=hf", f"arms={','.join(ARMS)}", *SIZES, *more]
    return [sys.executable, str(REPO / "cli.py"), "experiment", "--budget", "small", "--out", str(out),
            *[item for s in sets for item in ("--set", s)]]


@pytest.mark.slow
@requires_train
def test_small_budget_end_to_end_killed_and_resumed(tmp_path, memorizing_policy):
    """The small budget through the CLI on the tiny policy: killed (SIGKILL) once an arm is trained, started again
    with the same command it finishes without training that arm again, and its outputs hold every arm with
    intervals, the paired tests against DPO and the plots; a changed setting is then refused naming it."""
    out = tmp_path / "exp"
    command = _command(out, memorizing_policy)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    record = out / "arms" / "dpo" / "seed0" / "train.json"
    deadline = time.monotonic() + 900
    while not record.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert record.exists(), first.communicate()[1][-3000:] if first.poll() is not None else "no arm trained in time"
    os.killpg(first.pid, signal.SIGKILL)  # mid-run: the next unit (dpo seed 0's evaluation) is under way
    first.wait()
    trained = record.read_bytes()

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "data build: finished" in again.stderr and "dpo seed 0: trained already" in again.stderr
    assert record.read_bytes() == trained  # the finished arm was not trained again

    card = json.loads((out / "experiment.json").read_text())
    assert card["settings"]["budget"] == "small" and card["settings"]["steps"] == 2
    assert set(card["arms"]) == set(ARMS)
    statuses = {arm: {s["status"] for s in info["seeds"].values()} for arm, info in card["arms"].items()}
    assert all(status == {"trained"} for status in statuses.values()), statuses
    assert set(card["arms"]["stepdpo"]["seeds"]) == {"0", "1"} and set(card["arms"]["sdpo"]["seeds"]) == {"0"}
    results = {(r["arm"], r["set"], r["metric"]): r for r in card["results"]}
    for arm in ["start", *ARMS]:
        for name in ("embedded", "embedded-long"):
            r = results[(arm, name, "greedy")]
            assert r["problems"] == 3 and len(r["ci95"]) == 2 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert (arm, "embedded", "maj") in results and (arm, "embedded-long", "maj") not in results
    assert len(results[("stepdpo", "embedded", "greedy")]["seed_accuracies"]) == 2
    versus_dpo = {(c["arm"], c["set"]) for c in card["comparisons"] if c["against"] == "dpo" and c["metric"] == "greedy"}
    assert versus_dpo == {(arm, name) for arm in ARMS if arm != "dpo" for name in ("embedded", "embedded-long")}
    assert all("p_value" in c and "beyond_interval" in c for c in card["comparisons"])
    data = card["data"]["arm_pairs"]
    assert data["stepdpo_ood"]["pairs"] > 0 and data["stepdpo_ood"]["chosen_confirmed"]["share"] == 1.0
    diagnostics = {(d["arm"], d["seed"]): d for d in card["diagnostics"]}
    assert diagnostics[("stepdpo", 0)]["optimizer_steps"] == 2 and diagnostics[("sdpo", 0)]["optimizer_steps"] == 2
    assert diagnostics[("stepdpo", 0)]["beta"] == 0.4 and diagnostics[("dpo", 0)]["beta"] == 0.1
    loop = json.loads((out / "arms" / "dpo_st" / "seed0" / "selftrain" / "selftrain.json").read_text())
    assert len(loop["iterations"]) == 2 and card["arms"]["dpo_st"]["seeds"]["0"]["status"] == "trained"
    assert card["by_first_error"]["embedded"]["buckets"] and card["timing"]["units_seconds"]["total"] > 0

    page = (out / "report.html").read_text()
    for arm in ARMS:
        assert f"<td>{arm}</td>" in page
    for plot in ("accuracy-embedded", "accuracy-embedded-long", "margins", "first-error-embedded"):
        assert f'data-plot="{plot}"' in page
    assert "<script" not in page and 'http-equiv="Content-Security-Policy" content="default-src' in page
    markdown = (out / "tables" / "results.md").read_text()
    assert "| stepdpo | 2 |" in markdown and "vs DPO" in markdown
    for table in ("results.csv", "comparisons.csv", "diagnostics.csv", "by_first_error.csv"):
        assert (out / "tables" / table).stat().st_size > 0

    changed = subprocess.run(_command(out, memorizing_policy, "learning_rate=1e-5"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 1 and "learning_rate: 5e-06 -> 1e-05" in changed.stderr
    assert "dpo seed 0" in changed.stderr and record.read_bytes() == trained

    # a variant (a remedy tried once) trains on the same pairs in its own folder, without building them again
    variant = tmp_path / "variant"
    command = [*_command(variant, memorizing_policy, "learning_rate=1e-5", "arms=dpo,stepdpo", "seeds=0"),
               "--data-from", str(out)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "data build: finished" in done.stderr and "eval start: every set finished already" in done.stderr
    varied = json.loads((variant / "experiment.json").read_text())
    assert set(varied["arms"]) == {"dpo", "stepdpo"} and varied["settings"]["learning_rate"] == 1e-5
    assert varied["data"]["arm_pairs"]["stepdpo"]["fingerprint"] == data["stepdpo"]["fingerprint"]


def test_a_sets_own_size_is_used_and_a_changed_size_rewrites_its_problems(tmp_path):
    from stepdata.experiment.eval_sets import write_eval_problems
    from stepdata.io import read_table

    config = ExperimentConfig(budget="small", eval_sets=("embedded", "embedded-long"), eval_sizes={"embedded": 5})
    assert (config.eval_size("embedded"), config.eval_size("embedded-long")) == (5, 8)
    _, path, problems = write_eval_problems("embedded", config, tmp_path)
    assert len(problems) == 5
    assert len(read_table(path, kind="problems")) == 5
    smaller = ExperimentConfig(budget="small", eval_sets=("embedded",), eval_sizes="embedded=3")
    _, again, _ = write_eval_problems("embedded", smaller, tmp_path)
    assert again == path and len(read_table(path, kind="problems")) == 3  # not the 5 kept from before
    with pytest.raises(SettingError, match="eval_sizes names 'svamp'"):
        ExperimentConfig(budget="small", eval_sizes={"svamp": 3})
    assert ExperimentConfig().eval_sizes == {"embedded": 120}  # the full budget scores more where it can


def test_a_variant_starts_from_another_experiments_data_build_only_when_it_has_none(tmp_path):
    from stepdata.experiment.units import seed_from

    source, out = tmp_path / "source", tmp_path / "variant"
    with pytest.raises(FileNotFoundError, match="no finished data build"):
        seed_from(source, out)
    (source / "data" / "pairs").mkdir(parents=True)
    (source / "data" / "build.json").write_text("{}")
    (source / "data" / "pairs" / "dpo.parquet").write_text("x")
    (source / "eval").mkdir()
    (source / "eval" / "start-embedded.json").write_text("{}")
    (source / "eval" / "dpo-seed0-embedded.json").write_text("{}")
    copied = seed_from(source, out)
    assert (out / "data" / "pairs" / "dpo.parquet").read_text() == "x" and (out / "eval" / "start-embedded.json").exists()
    assert not (out / "eval" / "dpo-seed0-embedded.json").exists()  # a trained arm's evaluation is not the variant's
    assert len(copied) == 2
    (source / "data" / "build.json").write_text('{"changed": 1}')
    assert seed_from(source, out) == [] and (out / "data" / "build.json").read_text() == "{}"  # never over a build
