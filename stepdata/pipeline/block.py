"""A stage as a block: its Config, a lazily built engine, ``process(batch)`` and ``finalize``.

Every stage (sample, localize, rectify, synthesize, and later inference methods)
has the same shape, as datatrove's pipeline blocks do:

- a frozen ``Config`` dataclass, the one place its defaults and their help live
  (fields declared with :func:`stepdata.settings.setting`);
- an engine given as settings (:class:`~stepdata.generation.engine_config.EngineConfig`),
  as a shared handle, or as a ready :class:`~stepdata.generation.Generator`; it is
  built on first use, so a finished run never loads a model;
- :meth:`units` turns the input table into the units it works on (and counts what it
  leaves out), :meth:`process` maps a batch of units to output rows (called by the
  executor, batch by batch, resumably), :meth:`finalize` runs once over the whole
  output (global caps, flattening attempts into pairs, the summary);
- a lineage (problems, template, model) read from its input table's metadata and
  written into its own, so the next stage needs nobody to retype them.

An executor (:class:`~stepdata.pipeline.executor.LocalExecutor`) runs a block; the
block knows nothing of batches on disk, shards or resume.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from stepdata.generation.engine_config import EngineConfig
from stepdata.pipeline.run import StageRun
from stepdata.settings import config_from_mapping, recorded_config


class EngineHandle:
    """An engine built on first :meth:`get` and shared by the blocks that hold the handle.

    A recipe gives one handle to every step that samples from the same model, so the
    model loads once; a stage built from bare settings makes its own and closes it.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._generator: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._generator is not None

    def describe(self) -> dict[str, Any]:
        return self._generator.describe() if self.built else self.config.describe()

    @property
    def model(self) -> str | None:
        return self.config.model

    def get(self) -> Any:
        with self._lock:
            if self._generator is None:
                self._generator = self.config.build()
            return self._generator

    def close(self) -> None:
        with self._lock:
            if self._generator is not None:
                self._generator.close()
                self._generator = None

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings travel (to a cluster worker, which builds its own engine from them)."""
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])


class StageBlock:
    """The shape every stage has (see the module doc). Subclasses set the class attributes and
    :meth:`process`; the rest has defaults that suit a stage writing one row kind per unit."""

    name: ClassVar[str] = "stage"
    kind: ClassVar[str] = "rollouts"  # the output table's kind
    key_column: ClassVar[str] = "problem_id"  # the units' key (resume, retries)
    # the column whose value picks a unit's shard (None: the key column); a stage whose finalize works per
    # problem (per-problem caps) splits by problem_id, so each problem's units are in one shard
    shard_column: ClassVar[str | None] = None
    Config: ClassVar[type] = object

    def __init__(self, engine: Any = None, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        self._owned = isinstance(engine, EngineConfig)
        self._handle = EngineHandle(engine) if self._owned else engine if isinstance(engine, EngineHandle) else None
        self._generator = None if self._handle is not None else engine
        self.lineage: dict[str, Any] = {}
        self.recorded: dict[str, Any] = {}  # more settings to record (e.g. the plugins a localizer came from)
        self.left_out: dict[str, int] = {}
        self.totals = {"completion_tokens": 0}
        self._lock = threading.Lock()

    # -- the engine -------------------------------------------------------------------------

    @property
    def generator(self) -> Any:
        """The engine, built now if it was given as settings (the first batch with work asks for it)."""
        if self._generator is None and self._handle is not None:
            self._generator = self._handle.get()
        return self._generator

    @property
    def has_engine(self) -> bool:
        return self._generator is not None or self._handle is not None

    @property
    def engine_config(self) -> EngineConfig | None:
        """The engine as settings (None: the block has none, or was given a ready generator)."""
        return self._handle.config if self._handle is not None else None

    @property
    def model(self) -> str | None:
        """The engine's model as named, known without loading it."""
        if self._generator is not None:
            return str(self._generator.model)
        return None if self._handle is None or self._handle.model is None else str(self._handle.model)

    def engine_description(self) -> dict[str, Any] | None:
        """Backend, model and dtype of the engine, without loading it (None: the stage has none)."""
        if self._generator is not None:
            describe = getattr(self._generator, "describe", None)
            return describe() if describe else {"model": str(self._generator.model)}
        return self._handle.describe() if self._handle is not None else None

    def count_tokens(self, tokens: int) -> None:
        with self._lock:
            self.totals["completion_tokens"] += tokens

    def tokens_done(self) -> int:
        return self.totals["completion_tokens"]

    def close(self) -> None:
        """Release an engine this block built from settings (a shared handle or a generator stays open)."""
        if self._owned and self._handle is not None:
            self._handle.close()
            self._generator = None

    @classmethod
    def build(cls, engine: Any, problems: pd.DataFrame | None, config: Any) -> StageBlock:
        """The one constructor every stage has (recipes and commands use it): engine, problems, config."""
        return cls(engine, config)

    # -- sending a block to a worker process ------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The block without its engine: a cluster worker gets the settings and builds its own.

        A block given a ready generator cannot travel (a loaded model is not data): it
        must be given its engine as settings (an EngineConfig) to run on a cluster.
        """
        self.check_portable()
        state = self.__dict__.copy()
        del state["_lock"]
        state["_generator"] = None
        state["_owned"] = self._handle is not None  # the worker's copy of the handle is its own: it closes it
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def check_portable(self) -> None:
        """Raise TypeError when this block cannot be sent to a worker process (it holds a loaded engine)."""
        if self._generator is not None and self._handle is None:
            raise TypeError(f"the {self.name} stage holds a loaded engine ({self.model}), which cannot be sent to a "
                            "worker process: give the engine as settings (EngineConfig) to run it on a cluster")

    def add_totals(self, totals: Mapping[str, float]) -> None:
        """Add counts a worker's copy of this block gathered (generated tokens, seconds) to this one's."""
        with self._lock:
            for key, value in totals.items():
                self.totals[key] = self.totals.get(key, 0) + value

    @classmethod
    def from_recorded(cls, settings: Mapping[str, Any]) -> StageBlock:
        """A block with the config a finished run recorded and no engine or problems.

        Merging shards needs the stage's ``stats`` and ``finalize`` (global caps) over the joined
        output, which read only the config: no model may load and no problems table need be found
        for that. Settings that are not Config fields (engine, lineage, stage) are ignored.
        """
        fields = {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(cls.Config) else set()
        config = config_from_mapping(cls.Config, {k: v for k, v in settings.items() if k in fields},
                                     f"the recorded {cls.name} config")
        block = cls.__new__(cls)
        StageBlock.__init__(block, None, config)  # not the subclass's: it would want problems or an engine
        return block

    # -- what the executor calls -----------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What identifies this stage's output: its config, engine and lineage (the run's config)."""
        config = recorded_config(self.config) if dataclasses.is_dataclass(self.config) else {}
        settings: dict[str, Any] = {"stage": self.name, **config}
        if self.has_engine:
            settings |= {"model": self.model, "engine": self.engine_description()}
        if self.lineage:
            settings["lineage"] = dict(self.lineage)
        return settings | self.problems_setting() | self.recorded

    def problems_setting(self) -> dict[str, Any]:
        """``{"problems_table": {rows, fingerprint}}`` when the stage reads a problems table ({} otherwise).

        The problems (questions, gold answers, references) are part of what the output depends
        on, so a changed problems table is a changed setting a resume names, like any option.
        """
        hashes = self._problem_hashes()
        if hashes is None:
            return {}
        from stepdata.pipeline.run import _digest

        return {"problems_table": {"rows": len(hashes), "fingerprint": _digest("\n".join(hashes.values()))}}

    def _problem_hashes(self) -> dict[str, str] | None:
        """problem_id -> hash of its row in the problems table the stage reads (None: it reads none)."""
        problems = getattr(self, "problems", None)
        if problems is None:
            return None
        if getattr(self, "_problem_row_hashes", None) is None:
            from stepdata.pipeline.run import row_hashes

            table = problems.reset_index() if problems.index.name == "problem_id" else problems
            self._problem_row_hashes = dict(zip(table["problem_id"].astype(str), row_hashes(table)))
        return self._problem_row_hashes

    def unit_dependencies(self, units: pd.DataFrame) -> list[str] | None:
        """Per unit, a hash of what its rows depend on besides the unit itself: its problem's row.

        The run folds it into the unit's content hash, so with ``--allow-config-change
        --redo-changed-units`` after an edited problems table, only the units of the problems
        that changed are redone.
        """
        hashes = self._problem_hashes()
        if hashes is None or "problem_id" not in units.columns:
            return None
        return [hashes.get(str(p), "") for p in units["problem_id"]]

    def inherit(self, lineage: Mapping[str, Any]) -> None:
        """Take the input table's lineage (problems, template, model); this block's own settings win."""
        self.lineage = {k: v for k, v in lineage.items() if v is not None} | self.lineage

    def units(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """The units to process from the input table, and counts of rows left out (and why)."""
        return table, {}

    def output_path(self, out: str | Path) -> Path:
        """Where the executor's resumable table goes for the user's ``out``."""
        return Path(out)

    def extra_outputs(self, run: StageRun) -> list[Path]:
        """Files besides the run's table that a finished run has (a pair stage's flat pairs table)."""
        return []

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.process(batch)

    def stats(self, output: pd.DataFrame) -> dict[str, Any]:
        """Statistics of the whole output, for the run's summary."""
        return {}

    def finalize(self, run: StageRun, output: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Runs once over the finished output: (the stage's result table, its statistics)."""
        return output, dict(run.summary.stage_stats)

    def finished(self, run: StageRun, summary: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The result of a run found finished on disk (nothing is recomputed, no engine loads)."""
        from stepdata.io import read_table

        return read_table(run.final, kind=self.kind), dict(summary.get("stage_stats") or {})
