"""The local executor: runs a stage block over its input table, resumably, on this machine.

It is :class:`~stepdata.pipeline.run.StageRun` (atomic parts, a manifest, retry of
error rows, SIGKILL-safe) driven by a block: it takes the output shard's lock (a
second writer is refused), asks the block for its units and settings, checks the
output folder *before* the block's engine is built (a finished run returns at once,
a changed config or input is refused naming what changed), then runs ``process``
batch by batch and ``finalize`` once. A full disk is a :class:`~stepdata.pipeline.run.DiskFull`
error saying where; the same command resumes. Executors for clusters take the same
block and the same :class:`RunOptions`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    shard: str | None = setting(None, "Process slice i of N (e.g. 0/4); join the shards with `stepdata merge`.")
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

    def __init__(self, options: RunOptions, echo: Callable[[str], None] | None = None) -> None:
        if not options.out:
            raise ValueError("no output path given (--out)")
        parse_shard(options.shard)  # a bad --shard is refused before anything else
        self.options = options
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))

    def plan(self, block: StageBlock, table: pd.DataFrame) -> tuple[StageRun, pd.DataFrame, dict[str, int]]:
        """The run, its units and what was left out: everything short of building the engine."""
        options = self.options
        if options.limit is not None:
            table = table.head(options.limit)
        units, left_out = block.units(table)
        settings = block.settings() | ({"limit": options.limit} if options.limit is not None else {})
        run = StageRun(block.name, block.output_path(options.out), block.kind, settings, key_column=block.key_column,
                       batch_size=options.batch_size, shard=parse_shard(options.shard), overwrite=options.overwrite,
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


def make_executor(options: RunOptions, ray_options: Any = None,
                  echo: Callable[[str], None] | None = None) -> LocalExecutor:
    """The executor ``options.executor`` names (Ray is imported only when asked for)."""
    if options.executor == "ray":
        from stepdata.pipeline.ray_executor import RayExecutor, RayOptions

        return RayExecutor(options, ray_options or RayOptions(), echo=echo)
    return LocalExecutor(options, echo=echo)
