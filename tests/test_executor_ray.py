"""The Ray executor on a real local Ray cluster (``ray.init(num_cpus=2)``) with real engines.

Every stage run on Ray workers must give the local executor's table row for row
(per-request seeds make samples independent of which worker and batch they are in),
a worker SIGKILLed mid-run must have its batch retried with nothing lost or doubled,
and the command line must reach an existing cluster with ``--ray-address``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import requires_ray, requires_torch, requires_vllm

from stepdata.embedded import make_problems
from stepdata.generation.engine_config import EngineConfig
from stepdata.io import read_table
from stepdata.pipeline.executor import LocalExecutor, RunOptions
from stepdata.pipeline.localize import LocalizeConfig, LocalizeStage
from stepdata.pipeline.rectify import RectifyConfig, RectifyStage
from stepdata.pipeline.run import RunError
from stepdata.pipeline.sample import SampleConfig, SampleStage
from stepdata.pipeline.synthesize import SynthesizeConfig, SynthesizeStage

pytestmark = [requires_ray, requires_torch, pytest.mark.slow]

PROBLEMS = make_problems(6, seed=5, min_steps=2, max_steps=3)


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run_stage(executor: str, block, table: pd.DataFrame, out: Path, batch_size: int = 2, **ray_options):
    options = RunOptions(out=str(out), batch_size=batch_size, executor=executor, progress=False)
    if executor == "local":
        return LocalExecutor(options).run(block, table)
    from stepdata.pipeline.ray_executor import RayExecutor, RayOptions

    executor_ = RayExecutor(options, RayOptions(**ray_options))
    result = executor_.run(block, table)
    result.worker_pids = executor_.worker_pids
    return result


def chain(executor: str, model: Path, out: Path) -> dict:
    """sample -> localize (exact) -> rectify -> synthesize, each stage on ``executor``."""
    engine = EngineConfig(backend="hf", model=str(model))
    workers = {"actors": 2} if executor == "ray" else {}
    rollouts = run_stage(executor, SampleStage(engine, SampleConfig(n=3, max_tokens=40)), PROBLEMS,
                         out / "rollouts.parquet", **workers)
    localize = LocalizeStage.build(None, PROBLEMS, LocalizeConfig(method="exact"))
    localize.inherit({"template": "step_by_step"})
    localized = run_stage(executor, localize, rollouts.table, out / "localized.parquet", batch_size=4, **workers)
    rectify = RectifyStage(engine, PROBLEMS, RectifyConfig(n=2, max_tokens=24, max_pairs_per_problem=1))
    rectify.inherit({"template": "step_by_step"})
    rectified = run_stage(executor, rectify, localized.table, out / "stepdpo.parquet", **workers)
    synthesize = SynthesizeStage(engine, PROBLEMS, SynthesizeConfig(rounds=2, cuts=1, max_pairs_per_problem=1))
    synthesized = run_stage(executor, synthesize, PROBLEMS, out / "scdpo.parquet", **workers)
    return {"rollouts": rollouts, "localized": localized, "rectify": rectified, "synthesize": synthesized}


@pytest.fixture(scope="module")
def both(tiny_model_dir, tmp_path_factory, cluster):
    base = tmp_path_factory.mktemp("executors")
    return chain("local", tiny_model_dir, base / "local"), chain("ray", tiny_model_dir, base / "ray"), base


def test_every_stage_on_ray_equals_the_local_executor_row_for_row(both):
    local, ray_, base = both
    for stage in local:
        pd.testing.assert_frame_equal(local[stage].table, ray_[stage].table, obj=stage)
    # the same parts and manifest as the local executor, so either resumes the other's run
    for name in ("rollouts.parquet", "stepdpo.attempts.parquet", "scdpo.attempts.parquet"):
        pd.testing.assert_frame_equal(read_table(base / "local" / name), read_table(base / "ray" / name), obj=name)
        assert sorted(p.name for p in (base / "ray" / f"{name}.parts").glob("part-*")) == \
            sorted(p.name for p in (base / "local" / f"{name}.parts").glob("part-*"))
    # what the stages made is not empty: the comparison compares something
    assert len(local["rollouts"].table) == 18 and local["localized"].stats["localized"] > 0
    # (a random tiny model never states an answer, so no pair comes of it: the attempts are what is compared)
    assert local["rectify"].stats["candidates"] > 0 and local["synthesize"].stats["candidates"] > 0
    # tokens counted by the workers reach the summary; two workers shared the batches
    assert ray_["rollouts"].stats["completion_tokens"] == local["rollouts"].stats["completion_tokens"] > 0
    assert len(set(ray_["rollouts"].worker_pids)) == 2


def test_a_finished_ray_run_starts_no_worker(both, tiny_model_dir):
    _, _, base = both
    engine = EngineConfig(backend="hf", model=str(tiny_model_dir))
    again = run_stage("ray", SampleStage(engine, SampleConfig(n=3, max_tokens=40)), PROBLEMS,
                      base / "ray" / "rollouts.parquet", actors=2)
    assert again.already_finished and again.worker_pids == []


def _busy_workers() -> list[int]:
    listing = subprocess.run(["pgrep", "-f", "ray::StageWorker.process"], capture_output=True, text=True).stdout
    return [int(pid) for pid in listing.split()]


def test_a_worker_killed_mid_run_has_its_batch_retried(both, tiny_model_dir):
    """SIGKILL a worker while it processes a batch: Ray restarts it, the batch is redone, nothing is lost or doubled."""
    local, _, base = both
    engine = EngineConfig(backend="hf", model=str(tiny_model_dir))
    out = base / "killed" / "scdpo.parquet"
    block = SynthesizeStage(engine, PROBLEMS, SynthesizeConfig(rounds=2, cuts=1, max_pairs_per_problem=1))
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = _busy_workers()
            if busy and list(out.parent.glob("*.parts/part-*")):  # a batch is done and another is running
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one)
    killer.start()
    result = run_stage("ray", block, PROBLEMS, out, batch_size=1, actors=2)
    killer.join()
    assert killed, "no worker was seen processing a batch"
    pd.testing.assert_frame_equal(local["synthesize"].table, result.table)
    attempts = read_table(out.with_name("scdpo.attempts.parquet"))
    pd.testing.assert_frame_equal(read_table(base / "local" / "scdpo.attempts.parquet"), attempts)
    assert result.summary["batches_run"] == result.summary["batches_total"]


def test_a_block_holding_a_loaded_engine_is_refused(tmp_path, tiny_model_dir, cluster):
    from stepdata.generation import make_generator

    generator = make_generator("hf", str(tiny_model_dir))
    with pytest.raises(RunError, match="loaded engine .* give the engine as settings"):
        run_stage("ray", SampleStage(generator, SampleConfig(n=1, max_tokens=8)), PROBLEMS, tmp_path / "r.parquet")
    generator.close()


def test_the_command_line_joins_a_running_cluster(tmp_path, tiny_model_dir, cluster):
    """``stepdata sample --executor ray --ray-address ADDRESS`` runs on the cluster this test started."""
    address = cluster.get_runtime_context().gcs_address
    out = tmp_path / "rollouts.parquet"
    done = subprocess.run([sys.executable, "-m", "cli", "sample", "embedded:4", "--model", str(tiny_model_dir),
                           "--backend", "hf", "--n", "2", "--max-tokens", "16", "--out", str(out),
                           "--executor", "ray", "--ray-address", address, "--ray-actors", "2", "--batch-size", "1"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 Ray worker(s) ready" in done.stderr
    assert len(read_table(out)) == 8


@requires_vllm
def test_vllm_in_a_ray_worker_equals_vllm_here(tmp_path, tiny_model_dir, cluster):
    engine = EngineConfig(backend="vllm", model=str(tiny_model_dir))
    config = SampleConfig(n=2, max_tokens=24)
    block = SampleStage(engine, config)
    local = run_stage("local", block, PROBLEMS, tmp_path / "local.parquet", batch_size=3)
    block.close()
    on_ray = run_stage("ray", SampleStage(engine, config), PROBLEMS, tmp_path / "ray.parquet", batch_size=3,
                       actors=1, cpus_per_actor=2)
    pd.testing.assert_frame_equal(local.table, on_ray.table)
    assert local.table["completion"].str.len().gt(0).all()
