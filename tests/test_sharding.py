"""Sharded runs merged into exactly the unsharded result (issue 13), and SLURM arrays of recipe steps.

Rectify and sample run against the scripted policy server (a random tiny model never reaches
the right answer, so it could make no Step-DPO pair); synthesize and the SLURM scripts run
the tiny random HF model. Each module fixture runs a stage once unsharded and once as 3
ranks; the tests compare and break the shards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer
from test_pipeline_pairs import PROBLEMS, _wrong, gold_steps, scripted_policy

from cli import main
from stepdata import read_table, write_table
from stepdata.embedded import make_problems
from stepdata.generation import make_generator
from stepdata.generation.engine_config import EngineConfig
from stepdata.localize.exact import exact_first_error
from stepdata.pipeline.executor import LocalExecutor, RunOptions, resolve_shard
from stepdata.pipeline.merge import MergeError, find_shards, merge_shards, shard_path
from stepdata.pipeline.rectify import RectifyConfig, RectifyStage
from stepdata.pipeline.run import ConfigChanged
from stepdata.pipeline.sample import SampleConfig, SampleStage
from stepdata.pipeline.synthesize import SynthesizeConfig, SynthesizeStage
from stepdata.recipe import RecipeError, load_recipe, run_recipe
from stepdata.steps import join_steps

REPO = Path(__file__).resolve().parents[1]
RANKS = 3
CAPPED = RectifyConfig(n=3, max_pairs_per_problem=1)
SYNTH = SynthesizeConfig(rounds=6, max_step_tokens=24, last_number_fallback=True, max_pairs_per_problem=1)
SYNTH_PROBLEMS = dict(n=12, seed=3, min_steps=3, max_steps=5)
COUNTS = ("units", "rows", "error_rows", "errors_by_kind", "input_fingerprint")


# --- helpers ---------------------------------------------------------------------------------------------


def localized_rows() -> pd.DataFrame:
    """Two wrong rollouts per problem (first error at step 1 and at step 2): two distinct pairs a problem,
    so a cap of 1 binds; the scripted policy never solves the last problem."""
    rows = []
    for p in PROBLEMS.itertuples():
        meta = json.loads(p.meta)
        gold = gold_steps(p)
        for k in (1, 2):
            steps = gold[:k] + [_wrong(g, meta["steps"][j]["value"]) for j, g in enumerate(gold[k:], start=k)]
            assert exact_first_error(steps, p.meta).error_step == k
            rows.append({"rollout_id": f"{p.problem_id}:{k}", "problem_id": p.problem_id, "completion": join_steps(steps),
                         "steps": steps, "error_step": k, "method": "exact", "correct": False, "error": None})
    return pd.DataFrame(rows)


def run_block(block, table: pd.DataFrame, out: Path, *, rank: int | None = None, batch_size: int = 2):
    """The block run by the local executor as rank ``rank`` of RANKS (None: unsharded); SLURM's variables ignored."""
    options = RunOptions(out=str(out), batch_size=batch_size, progress=False, rank=rank,
                         world_size=None if rank is None else RANKS)
    return LocalExecutor(options, echo=lambda line: None, environ={}).run(block, table)


def summary_of(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".summary.json").read_text())


def same_summary_counts(merged: dict, whole: dict) -> None:
    assert {k: merged[k] for k in COUNTS} == {k: whole[k] for k in COUNTS}
    drop = {"pairs_output", "tokens_per_second_this_run"}
    assert ({k: v for k, v in merged["stage_stats"].items() if k not in drop}
            == {k: v for k, v in whole["stage_stats"].items() if k not in drop})


def same_table(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(read_table(a), read_table(b))


def rank_paths(out: Path, world: int = RANKS) -> list[Path]:
    return [shard_path(out, r, world) for r in range(world)]


# --- rectify against the scripted policy -----------------------------------------------------------------


@pytest.fixture(scope="module")
def policy():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "x")
        policy = scripted_policy(right_indices={0, 1}, never_right={PROBLEMS.problem_id[3]})
        with FaultyOpenAIServer(reply_body=policy) as server:
            yield server, make_generator("openai", "policy", base_url=server.base_url)


def rectify(generator, out: Path, *, rank: int | None = None, config: RectifyConfig = CAPPED,
            table: pd.DataFrame | None = None):
    block = RectifyStage(generator, PROBLEMS, config)
    return run_block(block, localized_rows() if table is None else table, out, rank=rank)


@pytest.fixture(scope="module")
def rectified(policy, tmp_path_factory):
    """Rectify unsharded (whole/) and as 3 ranks (sharded/), merged by `stepdata merge --out` (found by name)."""
    _, generator = policy
    root = tmp_path_factory.mktemp("rectify")
    whole, sharded = root / "whole" / "pairs.parquet", root / "sharded" / "pairs.parquet"
    whole_result = rectify(generator, whole)
    for rank in range(RANKS):
        rectify(generator, sharded, rank=rank)
    merged = CliRunner().invoke(main, ["merge", "--out", str(sharded)])
    assert merged.exit_code == 0, merged.output
    return root, whole, sharded, whole_result


def test_sharded_rectify_merges_to_the_unsharded_pairs_attempts_and_summary(rectified):
    root, whole, sharded, whole_result = rectified
    assert whole_result.stats["capped_per_problem"] > 0  # the cap binds
    assert whole_result.stats["pairs"] == 3  # one per solved problem
    same_table(sharded, whole)  # the pairs, every column, in order
    same_table(sharded.with_name("pairs.attempts.parquet"), whole.with_name("pairs.attempts.parquet"))
    same_summary_counts(summary_of(sharded), summary_of(whole))
    same_summary_counts(summary_of(sharded.with_name("pairs.attempts.parquet")),
                        summary_of(whole.with_name("pairs.attempts.parquet")))
    # split by problem (the caps are per problem): no problem has units in two shards
    shards = [read_table(p) for p in rank_paths(sharded.with_name("pairs.attempts.parquet"))]
    problems = [set(s.problem_id) for s in shards]
    assert sum(map(len, problems)) == len(set().union(*problems)) == len(PROBLEMS)


def test_a_merged_output_is_finished_for_an_unsharded_run_of_the_same_config(policy, rectified):
    server, generator = policy
    root, whole, sharded, _ = rectified
    served = len(server.served)
    again = rectify(generator, sharded)
    assert again.already_finished and len(server.served) == served  # nothing generated
    pd.testing.assert_frame_equal(again.table, read_table(whole))
    # another config is refused as for an unsharded run's output, naming the setting, before any work
    with pytest.raises(ConfigChanged, match=r"merged from shards\) was made with another config; changed: n: 3 -> 2"):
        rectify(generator, sharded, config=RectifyConfig(n=2, max_pairs_per_problem=1))
    assert len(server.served) == served


def test_per_problem_unit_caps_are_applied_before_the_split(policy, tmp_path):
    """max_rollouts_per_problem keeps each problem's first rollouts of the whole input, in every shard alike."""
    _, generator = policy
    config = RectifyConfig(n=3, max_rollouts_per_problem=1)
    whole, sharded = tmp_path / "whole" / "pairs.parquet", tmp_path / "sharded" / "pairs.parquet"
    result = rectify(generator, whole, config=config)
    assert result.left_out == {"over_max_rollouts_per_problem": len(PROBLEMS)}
    for rank in range(RANKS):
        rectify(generator, sharded, rank=rank, config=config)
    merge_shards(find_shards(sharded), sharded)
    same_table(sharded.with_name("pairs.attempts.parquet"), whole.with_name("pairs.attempts.parquet"))
    assert set(read_table(whole.with_name("pairs.attempts.parquet")).unit_id.str[-2:]) == {":1"}
    same_summary_counts(summary_of(sharded), summary_of(whole))  # left_out included


def test_merge_refuses_missing_doubled_and_mixed_shards_naming_them(policy, rectified, tmp_path):
    _, generator = policy
    root, whole, sharded, _ = rectified
    attempts = rank_paths(sharded.with_name("pairs.attempts.parquet"))
    out = tmp_path / "m.parquet"
    with pytest.raises(MergeError, match=r"missing rank\(s\) 2 of 3"):
        merge_shards(attempts[:2], out)
    with pytest.raises(MergeError, match=r"rank\(s\) 1 given more than once"):
        merge_shards([*attempts, attempts[1]], out)
    two = tmp_path / "two" / "pairs.parquet"
    for rank in range(2):
        LocalExecutor(RunOptions(out=str(two), batch_size=2, progress=False, shard=f"{rank}/2"), echo=lambda _: None,
                      environ={}).run(RectifyStage(generator, PROBLEMS, CAPPED), localized_rows())
    with pytest.raises(MergeError, match="different world sizes: rank 0 of 3"):
        merge_shards([*attempts[:2], rank_paths(two.with_name("pairs.attempts.parquet"), 2)[1]], out)
    other = tmp_path / "other" / "pairs.parquet"
    rectify(generator, other, rank=2, config=RectifyConfig(n=2, max_pairs_per_problem=1))
    with pytest.raises(MergeError, match=r"rank 2 of 3 .* another config than rank 0 of 3 .*n: 3 -> 2"):
        merge_shards([*attempts[:2], rank_paths(other.with_name("pairs.attempts.parquet"))[2]], out)
    changed = localized_rows()
    changed.loc[0, "completion"] += " "
    moved = tmp_path / "moved" / "pairs.parquet"
    rectify(generator, moved, rank=2, table=changed)
    with pytest.raises(MergeError, match="rank 2 of 3 .* another input than rank 0"):
        merge_shards([*attempts[:2], rank_paths(moved.with_name("pairs.attempts.parquet"))[2]], out)
    assert not out.exists() and not tmp_path.joinpath("m.attempts.parquet").exists()
    # the command says the same; the pairs shards stand for their attempts shards
    refused = CliRunner().invoke(main, ["merge", *map(str, rank_paths(sharded)[:2]), "--out", str(out)])
    assert refused.exit_code != 0 and "missing rank(s) 2 of 3" in refused.output
    merged = merge_shards(rank_paths(sharded), out)
    pd.testing.assert_frame_equal(merged.pairs, read_table(whole))


def test_merge_refuses_an_unfinished_shard_and_mixed_world_sizes_found_by_name(rectified, tmp_path):
    root, whole, sharded, _ = rectified
    copy = tmp_path / "pairs.parquet"
    for path in sharded.parent.glob("pairs.attempts.shard-*"):
        shutil.copy(path, tmp_path / path.name)
    unfinished = rank_paths(tmp_path / "pairs.attempts.parquet")[1]
    unfinished.with_name(unfinished.name + ".summary.json").unlink()
    with pytest.raises(MergeError, match="rank 1 of 3 .* is not finished"):
        merge_shards(find_shards(copy), copy)
    shutil.copy(rank_paths(sharded.with_name("pairs.attempts.parquet"))[0],
                shard_path(tmp_path / "pairs.attempts.parquet", 0, 2))
    with pytest.raises(MergeError, match="different world sizes lie beside"):
        find_shards(copy)


def test_sample_shards_merge_in_input_order(policy, tmp_path):
    """A stage that is no pair stage: rows back in the unsharded order (not only the same set), summary too."""
    _, generator = policy
    whole, sharded = tmp_path / "whole.parquet", tmp_path / "sharded.parquet"
    block = lambda: SampleStage(generator, SampleConfig(n=2))  # noqa: E731
    run_block(block(), PROBLEMS, whole, batch_size=1)
    for rank in range(RANKS):
        run_block(block(), PROBLEMS, sharded, rank=rank, batch_size=1)
    shards = [read_table(p) for p in rank_paths(sharded)]
    assert pd.concat(shards).problem_id.tolist() != read_table(whole).problem_id.tolist()  # concatenation is not it
    merge_shards(list(reversed(rank_paths(sharded))), sharded)
    same_table(sharded, whole)
    same_summary_counts(summary_of(sharded), summary_of(whole))


# --- where a process's shard comes from -----------------------------------------------------------------


@pytest.mark.parametrize("options, environ, expected", [
    ({}, {}, (0, 1)),
    ({}, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),
    ({}, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (2, 4)),
    ({"rank": 1, "world_size": 3}, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, (1, 3)),
    ({"shard": "0/1"}, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (0, 1)),
    ({"shard": "1/3", "rank": 1, "world_size": 3}, {}, (1, 3)),
])
def test_the_shard_comes_from_the_options_else_the_slurm_array(options, environ, expected):
    assert resolve_shard(RunOptions(out="x", **options), environ) == expected


@pytest.mark.parametrize("options, environ, message", [
    ({"shard": "1/3", "rank": 2, "world_size": 3}, {}, "--shard 1/3 and --rank 2 --world-size 3 disagree"),
    ({"rank": 1}, {}, "together"),
    ({"rank": 3, "world_size": 3}, {}, "--rank 3 must be below --world-size 3"),
    ({}, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "not within SLURM_ARRAY_TASK_COUNT=4"),
])
def test_inconsistent_shards_are_refused(options, environ, message):
    with pytest.raises(ValueError, match=message):
        resolve_shard(RunOptions(out="x", **options), environ)


def test_a_stage_command_reads_its_shard_from_slurm(policy, tmp_path, monkeypatch):
    server, _ = policy
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(main, ["sample", str(problems), "--backend", "openai", "--model", "policy",
                                       "--base-url", server.base_url, "--n", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "shard 1/2 from the SLURM array task" in result.output
    assert shard_path(out, 1, 2).exists() and not out.exists()


# --- synthesize with the tiny HF model, and SLURM arrays of a recipe step ---------------------------------


RECIPE = """\
vars: {out: runs/x, model: none}
out: ${out}
engine: {backend: hf}
steps:
  - {do: make-problems, name: problems, out: problems.parquet, n: 12, seed: 3, min_steps: 3, max_steps: 5}
  - do: synthesize
    input: "@problems"
    model: "${model}"
    out: scdpo.parquet
    config: {rounds: 6, max_step_tokens: 24, last_number_fallback: true, max_pairs_per_problem: 1}
    run: {batch_size: 4}
  - {do: audit, input: "@synthesize", out: report.html}
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "shard.yaml"
    path.write_text(RECIPE)
    return path


@requires_torch
@pytest.mark.slow
def test_sharded_synthesize_merges_to_the_unsharded_run(tiny_model_dir, tmp_path):
    problems = make_problems(**SYNTH_PROBLEMS)
    engine = EngineConfig(backend="hf", model=str(tiny_model_dir))
    whole, sharded = tmp_path / "whole" / "scdpo.parquet", tmp_path / "sharded" / "scdpo.parquet"

    def synthesize(out: Path, rank: int | None = None):
        block = SynthesizeStage(engine, problems, SYNTH)
        try:
            return run_block(block, problems, out, rank=rank, batch_size=4)
        finally:
            block.close()

    stats = synthesize(whole).stats
    assert stats["capped_per_problem"] > 0 and stats["pairs"] > 0, stats
    for rank in range(RANKS):
        synthesize(sharded, rank)
    per_shard = sum(len(read_table(p)) for p in rank_paths(sharded))
    merged = merge_shards(rank_paths(sharded.with_name("scdpo.attempts.parquet")), sharded)
    assert merged.pairs_path == sharded and per_shard == len(merged.pairs)  # problems whole in one shard
    same_table(sharded, whole)
    same_table(sharded.with_name("scdpo.attempts.parquet"), whole.with_name("scdpo.attempts.parquet"))
    same_summary_counts(summary_of(sharded), summary_of(whole))


def test_only_refuses_an_earlier_output_that_is_not_there_and_a_shard_of_a_non_stage(recipe_file, tmp_path):
    recipe = load_recipe(str(recipe_file), {"out": str(tmp_path / "run")})
    with pytest.raises(RecipeError, match=r"@synthesize .* not there; .*stepdata merge --out .*scdpo.parquet"):
        run_recipe(recipe, only="audit", echo=lambda _: None)
    assert (tmp_path / "run" / "problems.parquet").exists()  # a cheap earlier step simply ran
    with pytest.raises(RecipeError, match="shard a stage step .* 'problems' is a `do: make-problems` step"):
        run_recipe(recipe, only="problems", rank=0, world_size=2, echo=lambda _: None)
    with pytest.raises(RecipeError, match="no step 'sythesize'"):
        run_recipe(recipe, only="sythesize", echo=lambda _: None)
    refused = CliRunner().invoke(main, ["run", str(recipe_file), "--rank", "0", "--world-size", "2"])
    assert refused.exit_code != 0 and "give --only STEP" in refused.output


@requires_torch
@pytest.mark.slow
def test_slurm_array_and_merge_scripts_give_the_unsharded_recipe_output(recipe_file, tiny_model_dir, tmp_path,
                                                                       monkeypatch):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    sets = [f"model={tiny_model_dir}"]
    run_recipe(load_recipe(str(recipe_file), {"out": str(whole), "model": str(tiny_model_dir)}), echo=lambda _: None)
    written = CliRunner().invoke(main, ["slurm", str(recipe_file), "--step", "synthesize", "--ranks", str(RANKS),
                                        "--set", f"out={sharded}", "--set", sets[0], "--partition", "gpu", "--gpus",
                                        "1", "--time", "00:10:00", "--setup", "export OMP_NUM_THREADS=1",
                                        "--stepdata", f"{sys.executable} {REPO / 'cli.py'}",
                                        "--out", str(tmp_path / "slurm")])
    assert written.exit_code == 0, written.output
    array, merge, submit = (tmp_path / "slurm" / n for n in ("synthesize.array.sbatch", "synthesize.merge.sbatch",
                                                            "submit.sh"))
    assert "bash " + str(submit) in written.output and f"stepdata run {recipe_file}" in written.output
    text = array.read_text()
    assert "#SBATCH --array=0-2" in text and "#SBATCH --gres=gpu:1" in text and "#SBATCH --partition=gpu" in text
    assert f"--set out={sharded}" in text and "--only synthesize" in text
    assert "gres" not in merge.read_text()
    assert "--dependency=afterok:" in submit.read_text() and "sbatch --parsable" in submit.read_text()
    tasks = [subprocess.Popen(["bash", str(array)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=os.environ | {"SLURM_ARRAY_TASK_ID": str(rank), "SLURM_ARRAY_TASK_MIN": "0",
                                                "SLURM_ARRAY_TASK_COUNT": str(RANKS)})
             for rank in range(RANKS)]
    for task in tasks:
        output, _ = task.communicate(timeout=300)
        assert task.returncode == 0, output
    assert not (sharded / "scdpo.parquet").exists()
    merged = subprocess.run(["bash", str(merge)], capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    same_table(sharded / "scdpo.parquet", whole / "scdpo.parquet")
    same_table(sharded / "scdpo.attempts.parquet", whole / "scdpo.attempts.parquet")
    same_summary_counts(summary_of(sharded / "scdpo.parquet"), summary_of(whole / "scdpo.parquet"))
    # the recipe goes on after the array: the merged step is finished, no engine loads, the next step runs

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was loaded")

    monkeypatch.setattr(EngineConfig, "build", no_engine)
    lines: list[str] = []
    run_recipe(load_recipe(str(recipe_file), {"out": str(sharded), "model": str(tiny_model_dir)}), echo=lines.append)
    assert any("already finished" in line for line in lines) and (sharded / "report.html").exists()
