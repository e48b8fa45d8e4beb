"""The local executor: runs a stage block over its input table, resumably, on this machine.

It is :class:`~stepdata.pipeline.run.StageRun` (atomic parts, a manifest, retry of
error rows, SIGKILL-safe) driven by a block: it takes the output shard's lock (a
second writer is refused), asks the block for its units and settings, checks the
output folder *before* the block's engine is built (a finished run returns at once,
a changed config or input is refused naming what changed), then runs ``process``
batch by batch and ``finalize`` once. A full disk is a :class:`~stepdata.pipeline.run.DiskFull`
error saying where; the same command resumes. Executors for clusters take the same
block and the same :class:`RunOptions`.

Which shard a process runs is ``--rank``/``--world-size`` (or ``--shard i/N``), else, in a
SLURM array job, the array task's (:func:`resolve_shard`); the shards are joined by
:func:`stepdata.pipeline.merge.merge_shards` (``stepdata merge``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.io import is_disk_full
from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.run import (
    InputChanged,
    MapBatches,
    StageRun,
    disk_full,
    parse_shard,
)
from stepdata.settings import check_settings, setting


@dataclass(frozen=True)
class RunOptions:
    """Where a stage writes and how it batches, shards and resumes."""

    out: str = setting("", "Output table (.parquet).", cli="--out")
    batch_size: int = setting(64, "Units per resumable batch.", minimum=1)
    shard: str | None = setting(None, "Process slice i of N (e.g. 0/4; the same as --rank i --world-size N); join "
                                      "the shards with `stepdata merge`.")
    rank: int | None = setting(None, "Process shard RANK (0-based) of --world-size; join the shards with `stepdata "
                                     "merge`. Default: in a SLURM array job, $SLURM_ARRAY_TASK_ID - "
                                     "$SLURM_ARRAY_TASK_MIN.", minimum=0)
    world_size: int | None = setting(None, "Split the units into this many shards (the pair stages split by "
                                           "problem). Default: in a SLURM array job, $SLURM_ARRAY_TASK_COUNT.",
                                     minimum=1)
    overwrite: bool = setting(False, "Discard finished batches and start over.")
    allow_config_change: bool = setting(False, "Keep batches made with another config.")
    redo_changed_units: bool = setting(
        False, "When the input changed since the finished batches were made, keep the rows of the units that did "
               "not change and redo only the changed and new ones (without it a changed input is refused).")
    limit: int | None = setting(None, "Use only the first N rows of the input.", minimum=1)
    progress: bool = setting(True, "Print a progress line after every batch.", hidden=True)
    executor: str = setting("local", "Where the batches run: local (this process) or ray (actors of a Ray cluster "
                                     "that each hold the engine; see the --ray-* options).", choices=("local", "ray"))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class StageResult:
    """What a stage run produced: its result table (pairs for a pair stage), statistics and summary."""

    table: pd.DataFrame
    stats: dict[str, Any]
    summary: dict[str, Any]
    path: Path
    already_finished: bool = False
    left_out: dict[str, int] = field(default_factory=dict)


SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")


def resolve_shard(options: RunOptions, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) of this process: ``--rank/--world-size``, ``--shard i/N``, else the SLURM array's.

    ``--shard i/N`` is another spelling of ``--rank i --world-size N``; both given must agree.
    With neither, a SLURM array task (``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` set)
    is rank ID - ``SLURM_ARRAY_TASK_MIN`` (so ``--array=1-4`` gives ranks 0..3) of COUNT;
    ``--shard 0/1`` runs unsharded inside one. ``environ`` defaults to ``os.environ``; ``{}``
    ignores SLURM (a whole recipe in one job). Raises ValueError naming the options or variables.
    """
    shard = parse_shard(options.shard) if options.shard else None
    given = (options.rank, options.world_size)
    if given != (None, None):
        if None in given:
            raise ValueError("give --rank and --world-size together (or --shard RANK/WORLD_SIZE)")
        if not given[0] < given[1]:
            raise ValueError(f"--rank {given[0]} must be below --world-size {given[1]} (ranks count from 0)")
        if shard is not None and shard != given:
            raise ValueError(f"--shard {options.shard} and --rank {given[0]} --world-size {given[1]} disagree; "
                             "give one of them")
        return given  # type: ignore[return-value]
    if shard is not None:
        return shard
    return _slurm_shard(os.environ if environ is None else environ)


def _slurm_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """The SLURM array task's (rank, world size); (0, 1) outside an array job."""
    task, count, first = (environ.get(name) for name in SLURM_VARS)
    if task is None or count is None:
        return 0, 1
    try:
        rank, world = int(task) - int(first or 0), int(count)
    except ValueError:
        raise ValueError(f"SLURM_ARRAY_TASK_ID={task!r}, SLURM_ARRAY_TASK_COUNT={count!r}, "
                         f"SLURM_ARRAY_TASK_MIN={first!r}: not integers") from None
    if not 0 <= rank < world:
        raise ValueError(f"SLURM_ARRAY_TASK_ID={task} - SLURM_ARRAY_TASK_MIN={first or 0} gives rank {rank}, not "
                         f"within SLURM_ARRAY_TASK_COUNT={count}: an array with gaps or steps (--array=0-8:2) cannot "
                         "number the shards; give --rank and --world-size")
    return rank, world


def split_options(config: Any, options: dict[str, Any]) -> tuple[Any, RunOptions]:
    """Keyword options of a ``run_*`` call sorted into the stage's config and the run's options.

    ``run_rectify(..., max_pairs_per_problem=2, batch_size=8)``: the cap is a config field,
    the batch size a run option; a name that is neither is an error naming both.
    """
    import dataclasses

    config_fields = {f.name for f in dataclasses.fields(config)}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(options) - config_fields - run_fields)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}: neither {type(config).__name__} nor RunOptions fields")
    config = dataclasses.replace(config, **{k: v for k, v in options.items() if k in config_fields})
    return config, RunOptions(**{k: v for k, v in options.items() if k in run_fields and k not in config_fields})


class LocalExecutor:
    """Runs blocks on this machine (see the module doc)."""

    def __init__(self, options: RunOptions, echo: Callable[[str], None] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if not options.out:
            raise ValueError("no output path given (--out)")
        self.options = options
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.shard = resolve_shard(options, environ)  # a bad --shard or rank is refused before anything else
        if self.shard[1] > 1 and options.shard is None and options.rank is None:
            self.echo(f"shard {self.shard[0]}/{self.shard[1]} from the SLURM array task ({', '.join(SLURM_VARS)}; "
                      "--shard 0/1 runs unsharded)")

    def plan(self, block: StageBlock, table: pd.DataFrame) -> tuple[StageRun, pd.DataFrame, dict[str, int]]:
        """The run, its units and what was left out: everything short of building the engine."""
        options = self.options
        if options.limit is not None:
            table = table.head(options.limit)
        units, left_out = block.units(table)
        settings = block.settings() | ({"limit": options.limit} if options.limit is not None else {})
        run = StageRun(block.name, block.output_path(options.out), block.kind, settings, key_column=block.key_column,
                       batch_size=options.batch_size, shard=self.shard, shard_column=block.shard_column,
                       overwrite=options.overwrite,
                       allow_config_change=options.allow_config_change,
                       redo_changed_units=options.redo_changed_units, progress=options.progress)
        run.companions = block.extra_outputs(run)
        run.dependencies = block.unit_dependencies
        return run, units, left_out

    def run(self, block: StageBlock, table: pd.DataFrame) -> StageResult:
        """Run ``block`` over ``table`` (or find it finished); raises ConfigChanged, InputChanged or
        OutputLocked before any engine loads, DiskFull when a write runs out of space."""
        run, units, left_out = self.plan(block, table)
        block.left_out = left_out
        try:
            with run.locked():
                return self._run(run, block, units, left_out)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full(exc, f"The finished batches are kept in {run.parts}") from None

    def _run(self, run: StageRun, block: StageBlock, units: pd.DataFrame, left_out: dict[str, int]) -> StageResult:
        state = run.check(units)
        if state.input_changed is not None and not self.options.redo_changed_units:
            raise InputChanged(state.input_changed)
        if state.finished and all(run.is_current(path) for path in block.extra_outputs(run)):
            self.echo(f"{block.name}: {run.final} is already finished with this config ({state.batches_total} "
                      f"batches, {state.summary.get('rows')} rows); nothing to do (--overwrite starts over)")
            result, stats = block.finished(run, state.summary)
            return StageResult(result, stats, dict(state.summary), run.final, already_finished=True,
                               left_out=left_out)

        def stats(output: pd.DataFrame) -> dict[str, Any]:
            return block.stats(output) | ({"left_out": left_out} if left_out else {})

        output = run.run(units, block, stats, tokens_done=block.tokens_done, map_batches=self.map_batches(block))
        result, final_stats = block.finalize(run, output)
        return StageResult(result, final_stats, run.summary.as_dict(), run.final, left_out=left_out)

    def map_batches(self, block: StageBlock) -> MapBatches | None:
        """How the batches' work is done: None is the block's ``process`` here, one batch after another."""
        return None


def make_executor(options: RunOptions, ray_options: Any = None, echo: Callable[[str], None] | None = None,
                  environ: Mapping[str, str] | None = None) -> LocalExecutor:
    """The executor ``options.executor`` names (Ray is imported only when asked for)."""
    if options.executor == "ray":
        from stepdata.pipeline.ray_executor import RayExecutor, RayOptions

        return RayExecutor(options, ray_options or RayOptions(), echo=echo, environ=environ)
    return LocalExecutor(options, echo=echo, environ=environ)
