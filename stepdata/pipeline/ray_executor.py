"""The Ray executor: a stage's batches run on the actors of a Ray cluster, each holding the engine.

It is the local executor (same block, same :class:`~stepdata.pipeline.executor.RunOptions`,
same parts, manifest and summary, same resume) with the batches' work handed to
workers instead of done in this process:

- each worker is a Ray actor that gets a copy of the block *without* its engine (only
  the settings travel, see :meth:`StageBlock.__getstate__`) and builds the engine
  itself, once, reserving the GPUs and CPUs the options ask for;
- this process (the driver) plans the run, checks the output folder before any
  worker starts (a finished run starts none), hands out the batches still to do,
  writes each batch's part and manifest entry the moment it comes back (in any
  order), then runs the stage's ``finalize`` once; only the driver writes, so the
  output folder need not be shared with the workers;
- a worker that dies (killed, out of memory, its node lost) is restarted by Ray and
  its batch retried (``max_retries`` times); past that the run stops with the
  finished batches kept, and the same command resumes.

Why not ``ray.data.llm``: its vLLM stage keeps only the first of n samples per prompt
and ``ray[llm]`` pins an old vLLM; our workers run the stage's own ``process``
(sampling, the continuation path, answer checks) with whatever engine it names.
Ray is an extra (``pip install 'stepdata[ray]'``) imported only when this executor runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stepdata.generation.engine_config import EngineConfig
from stepdata.keyvalues import parse_key_values
from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.executor import LocalExecutor, RunOptions, StageResult
from stepdata.pipeline.run import MapBatches, RunError
from stepdata.settings import check_settings, setting


@dataclass(frozen=True)
class RayOptions:
    """How a stage runs on a Ray cluster: which cluster, how many workers, what each reserves."""

    address: str | None = setting(None, "Ray cluster to join: auto (the one `ray start` made on this node) or "
                                        "ray://HOST:10001; without it a local Ray instance is started and stopped.",
                                  cli="--ray-address")
    actors: int | None = setting(None, "Workers, each holding one engine (default: the cluster's GPUs divided by "
                                       "the GPUs per worker, or 1 on a cluster without GPUs).",
                                 cli="--ray-actors", minimum=1)
    gpus_per_actor: float | None = setting(None, "GPUs each worker reserves (default: the tensor parallel size on a "
                                                 "cluster with GPUs, else 0).", cli="--ray-gpus-per-actor", minimum=0)
    cpus_per_actor: float = setting(1.0, "CPUs each worker reserves.", cli="--ray-cpus-per-actor", minimum=0)
    tensor_parallel_size: int | None = setting(None, "vLLM tensor parallelism inside each worker: sets the engine "
                                                     "option tensor_parallel_size and the default GPUs per worker.",
                                               cli="--ray-tensor-parallel-size", minimum=1)
    max_retries: int = setting(3, "Times a worker that dies (killed, out of memory, node lost) is restarted and "
                                  "its batch retried before the run stops (finished batches are kept).",
                               cli="--ray-max-retries", minimum=0)

    def __post_init__(self) -> None:
        check_settings(self)

    def engine(self, engine: EngineConfig) -> EngineConfig:
        """``engine`` with this tensor parallel size among its options (unless they already set one)."""
        if self.tensor_parallel_size is None or "tensor_parallel_size" in parse_key_values(
                engine.engine_options, option="--engine-option"):
            return engine
        return dataclasses.replace(engine, engine_options=(*engine.engine_options,
                                                            f"tensor_parallel_size={self.tensor_parallel_size}"))

    def tensor_parallel(self, block: StageBlock) -> int:
        """The tensor parallel size the block's engine will use (1 unless set)."""
        options = block.engine_config.options() if block.engine_config is not None else {}
        return int(self.tensor_parallel_size or options.get("tensor_parallel_size") or 1)


class StageWorker:
    """A Ray actor's body: one copy of the block, its engine built once, batches processed one at a time."""

    def __init__(self, block: StageBlock) -> None:
        self.block = block

    def ready(self) -> dict[str, Any]:
        """Build the engine now (so a worker that cannot load the model says so before any batch)."""
        start = time.monotonic()
        if self.block.has_engine:
            self.block.generator  # noqa: B018 - builds it
        return {"pid": os.getpid(), "engine_seconds": round(time.monotonic() - start, 2)}

    def process(self, number: int, units: pd.DataFrame) -> tuple[int, pd.DataFrame, dict[str, float]]:
        """Batch ``number``'s rows, and what this batch added to the block's totals (tokens, seconds)."""
        before = dict(self.block.totals)
        rows = self.block.process(units)
        added = {k: v - before.get(k, 0) for k, v in self.block.totals.items()}
        return number, rows, added

    def close(self) -> None:
        self.block.close()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RunError("--executor ray needs Ray: pip install 'stepdata[ray]' (or `pip install \"ray[data]\"`)") \
            from None
    return ray


class RayExecutor(LocalExecutor):
    """Runs blocks on a Ray cluster (see the module doc); ``timings`` says where the time went."""

    def __init__(self, options: RunOptions, ray_options: RayOptions | None = None,
                 echo: Callable[[str], None] | None = None, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(options, echo, environ)
        self.ray_options = ray_options or RayOptions()
        self.timings: dict[str, float] = {}
        self.worker_pids: list[int] = []

    def run(self, block: StageBlock, table: pd.DataFrame) -> StageResult:
        ray = _ray()
        try:
            block.check_portable()  # a block that cannot travel is refused before anything starts
        except TypeError as exc:
            raise RunError(f"cannot send the {block.name} stage to Ray workers: {exc}") from None
        started_here = not ray.is_initialized()
        try:
            return super().run(block, table)
        finally:
            if started_here and ray.is_initialized():
                ray.shutdown()  # stops the local instance this run started; from a cluster it only disconnects

    def map_batches(self, block: StageBlock) -> MapBatches:
        return lambda jobs: self._dispatch(block, jobs)

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self.ray_options.address, include_dashboard=False, ignore_reinit_error=True)
        return ray

    def _workers(self, ray: Any, block: StageBlock, jobs: int) -> list[Any]:
        """Start the workers (at most one per batch) and wait until each has built its engine.

        The block goes into the object store once; ``self._shared`` keeps that copy alive
        for the whole run, because a restarted worker is given it again.
        """
        options = self.ray_options
        cluster = ray.cluster_resources()
        parallel = options.tensor_parallel(block)
        gpus = options.gpus_per_actor
        if gpus is None:
            gpus = float(parallel) if cluster.get("GPU", 0) > 0 and block.has_engine else 0.0
        wanted = options.actors or (max(1, int(cluster.get("GPU", 0) // gpus)) if gpus else 1)
        for resource, need in (("GPU", gpus), ("CPU", options.cpus_per_actor)):
            if need > cluster.get(resource, 0):
                raise RunError(f"each Ray worker asks for {need:g} {resource}(s) but the cluster has "
                               f"{cluster.get(resource, 0):g}; change --ray-{resource.lower()}s-per-actor")
        actor = ray.remote(StageWorker).options(num_cpus=options.cpus_per_actor, num_gpus=gpus,
                                                max_restarts=options.max_retries,
                                                max_task_retries=options.max_retries)
        self._shared = ray.put(block)
        workers = [actor.remote(self._shared) for _ in range(min(wanted, jobs))]
        start = time.monotonic()
        ready = self._get(ray, [w.ready.remote() for w in workers], "starting a worker")
        self.timings["start_workers"] = round(time.monotonic() - start, 2)
        self.worker_pids = [r["pid"] for r in ready]
        self.echo(f"{block.name}: {len(workers)} Ray worker(s) ready in {self.timings['start_workers']:.0f}s "
                  f"({gpus:g} GPU and {options.cpus_per_actor:g} CPU each)")
        return workers

    def _dispatch(self, block: StageBlock, jobs: list[tuple[int, pd.DataFrame]]) -> Iterator[tuple[int, pd.DataFrame]]:
        """Hand the batches to the workers (two in flight each, so an engine never waits) and yield them back."""
        if not jobs:
            return
        ray = self._connect()
        workers = self._workers(ray, block, len(jobs))
        queue = deque(jobs)
        pending: dict[Any, tuple[Any, int]] = {}
        slots = [w for w in workers for _ in range(2)]
        start = time.monotonic()
        try:
            while queue or pending:
                while queue and slots:
                    worker = slots.pop(0)
                    number, units = queue.popleft()
                    pending[worker.process.remote(number, units)] = (worker, number)
                [ref], _ = ray.wait(list(pending), num_returns=1)
                worker, number = pending.pop(ref)
                number, rows, totals = self._get(ray, ref, f"batch {number}")
                slots.append(worker)
                block.add_totals(totals)
                yield number, rows
        finally:
            self.timings["process"] = round(time.monotonic() - start, 2)
            self._stop(ray, workers)
            self._shared = None

    @staticmethod
    def _stop(ray: Any, workers: list[Any]) -> None:
        """Let each worker release its engine (a vLLM engine has processes of its own), then end it."""
        try:
            ray.get([w.close.remote() for w in workers], timeout=120)
        except Exception:  # noqa: BLE001 - a dead or stuck worker is ended below all the same
            pass
        for worker in workers:
            ray.kill(worker)

    def _get(self, ray: Any, refs: Any, what: str) -> Any:
        """``ray.get`` with the stage's own error raised as itself, and a dead worker said plainly."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(refs)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except RayActorError as exc:
            raise RunError(f"{what}: a Ray worker died and was restarted {self.ray_options.max_retries} time(s) "
                           f"without finishing it ({str(exc).splitlines()[0]}); the finished batches are kept: "
                           "run the same command again to resume (or raise --ray-max-retries)") from None
