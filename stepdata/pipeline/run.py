"""The run machinery every stage shares: batches, shards, a manifest, resume.

A stage maps units of an input table (problems, rollouts) to rows of an output
table. Units are split into batches; each finished batch is written as its own
Parquet part (atomically) and then recorded in a manifest, so a run killed at any
moment and started again with the same command:

- skips every finished batch and redoes the others (same seeds, same rows: nothing
  is doubled because a part is replaced whole),
- retries the rows of finished batches that carry an ``error`` (a request that ran
  out of retries, an answer check that timed out) and replaces them in place,
- refuses to continue if the stage's config changed (its hash is in the manifest)
  unless told to (``allow_config_change``) or told to start over (``overwrite``),
  naming the settings that changed; :meth:`StageRun.check` does this (and says
  whether the run is already finished) before any engine is loaded.

What a part holds is known by content, never by position: every unit has a hash of
its row (:func:`row_hashes`), the manifest records the input's fingerprint and each
part the ids of its units, and each part's own Parquet metadata records its unit
ids and hashes and the config hash. So

- a changed input (re-sampled rollouts, rows added at the front) is refused, naming
  how many units changed, are new or gone; ``redo_changed_units`` instead keeps the
  rows of the unchanged units (they are set aside in ``carry-<shard>.parquet``) and
  redoes only the others;
- a part that does not read (truncated, garbled) is named and its batch redone; a
  manifest that does not read is rebuilt from the parts that do; a part written but
  not recorded (a kill between the two) is recognised and kept;
- leftover ``.tmp`` files of a killed write are removed, and the finished table and
  summary carry a fingerprint of the parts they were assembled from, so a table left
  by an earlier run is never taken for this one's.

One run writes a shard at a time: :meth:`StageRun.locked` holds ``lock-<shard>``
(:mod:`stepdata.pipeline.lock`). A full disk stops the run with :class:`DiskFull`,
saying where and that the same command resumes.

``shard=(i, N)`` keeps the units whose ``shard_column`` value (the key column, or
``problem_id`` for the pair stages, whose caps are per problem) hashes to i modulo
N, so N machines (a SLURM array, a Ray job) can share a stage. Units are made from
the whole input before the split, so per-problem unit caps stay global. A finished
shard's table records what a merge needs (the stamp's ``shard`` record): its rank
and world size, the whole input's unit count and fingerprint, and its units' global
positions, ids and hashes. :func:`stepdata.pipeline.merge.merge_shards` checks that
the shards cover the input exactly once, puts the rows back in input order, runs
the stage's ``finalize`` over the whole (global caps) and writes the summary; the
merged table is then what an unsharded run with the same config and input finds
finished (:meth:`StageRun.check`).

Layout next to ``out`` (``rollouts.parquet``): ``rollouts.parquet.parts/`` holds
``manifest-<shard>.json``, ``lock-<shard>`` and the parts; ``out`` itself (or, with
N > 1 shards, ``rollouts.shard-00002-of-00008.parquet``) appears when the shard is
complete, with ``<out>.summary.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stepdata.io import (
    atomic_path,
    is_disk_full,
    read_metadata,
    read_table,
    to_arrow,
    write_text_atomic,
)
from stepdata.pipeline.lock import OutputLock, OutputLocked
from stepdata.secrets import redact_secrets, scrub_object

log = logging.getLogger(__name__)

ProcessBatch = Callable[[pd.DataFrame], pd.DataFrame]
# the batches' work: (batch number, units) pairs in, (batch number, rows) out as each batch finishes
MapBatches = Callable[[list[tuple[int, pd.DataFrame]]], Iterator[tuple[int, pd.DataFrame]]]


def sequential(process: ProcessBatch) -> MapBatches:
    """The local way to run batches: ``process`` on each in turn, here (lazily, so each is saved as it ends)."""
    def map_batches(jobs: list[tuple[int, pd.DataFrame]]) -> Iterator[tuple[int, pd.DataFrame]]:
        for number, units in jobs:
            yield number, process(units)
    return map_batches


class RunError(RuntimeError):
    """A run that cannot go on as asked; the message says why and what to do."""


class ConfigChanged(RunError):
    """The output folder holds batches made with a different config."""


class InputChanged(RunError):
    """The output folder holds batches made from another input (changed, added or removed units)."""


class DiskFull(RunError):
    """A write ran out of space; what is finished is kept and the same command resumes."""


RUN_ERRORS = (RunError, OutputLocked)  # what a command shows as a one-line error

PART_KEY = b"stepdata_part"  # a part's own record: its units, their hashes, the config hash
STAMP_KEY = b"stepdata_run"  # a finished table's record of the parts it was assembled from
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")

_ABSENT = "(not set)"


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config values under dotted keys (``sampling.temperature``), so a diff names the leaf."""
    if isinstance(config, Mapping) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat |= _flat(value, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: config}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every setting that differs between two stage configs.

    Both sides are compared as the manifest stores them (secrets redacted, JSON
    values), so a refused resume can say which option changed without ever
    printing a key, and a tuple read back as a list is not a change.
    """
    def stored(config: Mapping[str, Any]) -> dict[str, Any]:
        return _flat(json.loads(json.dumps(redact_secrets(dict(config)), sort_keys=True, default=str)))

    before, after = stored(old), stored(new)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if was != now:
            show = [v if v is _ABSENT else json.dumps(v, ensure_ascii=False) for v in (was, now)]
            lines.append(f"{key}: {show[0]} -> {show[1]}")
    return lines


# -- content hashes ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A cell as plain JSON-able data: arrays as lists, numpy scalars as Python ones, NaN/NA as None."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_hashes(table: pd.DataFrame) -> list[str]:
    """A hash of each row's content (column names and values; NaN and None alike), stable across runs."""
    columns = sorted(map(str, table.columns))
    head = json.dumps(columns)
    frame = table.set_axis(list(map(str, table.columns)), axis=1)[columns]
    return [_digest(head + json.dumps([_plain(v) for v in values], sort_keys=True, default=str, ensure_ascii=False))
            for values in frame.itertuples(index=False, name=None)]


def table_fingerprint(table: pd.DataFrame) -> dict[str, Any]:
    """What a run records of a table it depends on (a problems table): its rows and a hash of their content."""
    return {"rows": len(table), "fingerprint": _digest("\n".join(row_hashes(table)))}


def _units_fingerprint(ids: list[str], hashes: list[str]) -> str:
    return _digest("\n".join(f"{i}\t{h}" for i, h in zip(ids, hashes)))


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The run stamp a finished table carries (None: the file does not read or was not finished by a run)."""
    try:
        raw = pq.read_schema(path).metadata or {}
        stamp = json.loads(raw.get(STAMP_KEY, b"null"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


@dataclass(frozen=True)
class RunCheck:
    """What :meth:`StageRun.check` found in the output folder before any work (or engine) started.

    ``input_changed`` is the reason to refuse (None: the input is the one the batches were made from).
    """

    batches_total: int
    batches_done: int
    error_rows: int
    finished: bool
    starting_over: bool = False
    summary: dict[str, Any] | None = None
    input_changed: str | None = None


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable hash of a stage config: every setting, secrets excepted (they never enter it; counts such
    as ``max_tokens`` do, see :func:`stepdata.secrets.is_secret_name`)."""
    canonical = json.dumps(redact_secrets(dict(config)), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def shard_of(key: str, shards: int) -> int:
    """Which of ``shards`` shards a unit belongs to (stable across machines and runs)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shards


def parse_shard(text: str | None) -> tuple[int, int]:
    """'3/8' -> (3, 8); None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        index, total = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), not {text!r}") from None
    if not 0 <= index < total:
        raise ValueError(f"--shard {text}: need 0 <= i < N")
    return index, total


@dataclass
class RunSummary:
    """What a stage run did; written as JSON next to its output."""

    stage: str
    output: str
    shard: str
    config_hash: str
    units: int = 0
    rows: int = 0
    error_rows: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    batches_total: int = 0
    batches_run: int = 0
    batches_skipped: int = 0
    rows_retried: int = 0
    units_reused: int = 0
    seconds: float = 0.0
    input_fingerprint: str = ""
    run_fingerprint: str = ""
    stage_stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _error_kind(message: str) -> str:
    return message.split(":", 1)[0].strip() or "error"


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def disk_full(exc: OSError, saved: str) -> DiskFull:
    """The error a full disk becomes: where the space ran out, what is kept (``saved``), and how to go on."""
    where = Path(exc.filename) if getattr(exc, "filename", None) else None
    free = ""
    if where is not None:
        try:
            free = f" ({_size(shutil.disk_usage(where.parent).free)} free on that file system)"
        except OSError:
            pass
    what = f"no space left on device while writing {where}" if where is not None else f"no space left on device ({exc})"
    return DiskFull(f"{what}{free}. {saved}; free some space and run the same command again: it resumes from there")


@dataclass
class _Plan:
    """This shard's units, their ids and content hashes, and the batches they fall into."""

    units: pd.DataFrame
    ids: list[str]
    hashes: list[str]
    batch_size: int
    positions: list[int] = field(default_factory=list)  # each unit's position among all the input's units
    all_units: int = 0  # the whole (unsharded) input's units
    all_fingerprint: str = ""  # ... and their fingerprint: what every shard of one input shares

    @property
    def fingerprint(self) -> str:
        return _units_fingerprint(self.ids, self.hashes)

    @property
    def count(self) -> int:
        return math.ceil(len(self.ids) / self.batch_size)

    def span(self, number: int) -> slice:
        return slice(number * self.batch_size, (number + 1) * self.batch_size)

    def batch(self, number: int) -> pd.DataFrame:
        return self.units.iloc[self.span(number)]

    def batch_ids(self, number: int) -> list[str]:
        return self.ids[self.span(number)]

    def batch_fingerprint(self, number: int) -> str:
        span = self.span(number)
        return _units_fingerprint(self.ids[span], self.hashes[span])


@dataclass
class _Job:
    """A batch to (re)make: the units to process (``todo``) and the rows kept for the others."""

    number: int
    todo: pd.DataFrame
    ids: list[str]
    hashes: list[str]
    kept: list[pd.DataFrame]
    input_fingerprint: str
    retry_of: _Part | None = None  # a finished part whose error rows are redone


@dataclass
class _Part:
    """A part on disk as its own metadata describes it."""

    path: Path
    meta: dict[str, Any]  # PART_KEY's record
    config: dict[str, Any]  # the stepdata metadata's config


class StageRun:
    """Runs ``process`` over the units of one shard, batch by batch, resumably (see the module doc)."""

    def __init__(
        self,
        stage: str,
        out: str | os.PathLike,
        kind: str,
        config: Mapping[str, Any],
        *,
        key_column: str,
        batch_size: int = 64,
        shard: tuple[int, int] = (0, 1),
        shard_column: str | None = None,
        overwrite: bool = False,
        allow_config_change: bool = False,
        redo_changed_units: bool = False,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.stage, self.kind, self.key_column = stage, kind, key_column
        self.shard_column = shard_column or key_column  # whose value picks a unit's shard
        self.out = Path(out)
        self.config = dict(config) | {"batch_size": batch_size}
        self.hash = config_hash(self.config)
        self.batch_size = batch_size
        self.shard = shard
        self.overwrite, self.allow_config_change, self.progress = overwrite, allow_config_change, progress
        self.redo_changed_units = redo_changed_units
        index, total = shard
        self.shard_label = f"{index:05d}-of-{total:05d}"
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.manifest_path = self.parts / f"manifest-{self.shard_label}.json"
        self.carry_path = self.parts / f"carry-{self.shard_label}.parquet"
        self.final = self.out if total == 1 else self.out.with_name(f"{self.out.stem}.shard-{self.shard_label}{self.out.suffix}")
        self.companions: list[Path] = []  # more outputs of this shard (a pair stage's pairs table): tmp files cleaned
        # per unit, a hash of what else its rows depend on (its problem): part of the unit's content hash
        self.dependencies: Callable[[pd.DataFrame], list[str] | None] | None = None
        self._lock = OutputLock(self.parts / f"lock-{self.shard_label}",
                                f"{self.final}" + (f" (shard {index}/{total})" if total > 1 else ""))
        self._warned: set[str] = set()
        self._planned: tuple[pd.DataFrame, _Plan] | None = None
        self.stamp: dict[str, Any] | None = None  # what the finished table of this run records (set by check/run)

    # -- small helpers ----------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _part_path(self, number: int) -> Path:
        return self.parts / f"part-{self.shard_label}-{number:06d}.parquet"

    def _shard_part_files(self) -> list[Path]:
        return sorted(self.parts.glob(f"part-{self.shard_label}-*.parquet"))

    def _plan(self, units: pd.DataFrame) -> _Plan:
        """This shard's units in input order, with their hashes (the same split on every run).

        Every unit of the input is hashed (not only this shard's), so each shard knows the
        whole input's fingerprint and where its units stand in it: what a merge checks.
        """
        if self._planned is not None and self._planned[0] is units:
            return self._planned[1]
        index, total = self.shard
        keys = units[self.key_column].astype(str)
        if keys.duplicated().any():
            raise ValueError(f"input has repeated {self.key_column} values, e.g. {keys[keys.duplicated()].iloc[0]!r}")
        if self.shard_column not in units.columns:
            raise ValueError(f"cannot split the input into shards by {self.shard_column!r}: it has no such column")
        every = units.reset_index(drop=True)
        hashes = row_hashes(every)
        more = self.dependencies(every) if self.dependencies is not None else None
        if more is not None:
            hashes = [_digest(f"{h}:{m}") for h, m in zip(hashes, more)]
        ids = keys.tolist()
        positions = [i for i, k in enumerate(every[self.shard_column].astype(str)) if shard_of(k, total) == index]
        mine = every.iloc[positions].reset_index(drop=True)  # by position: an empty input keeps its columns
        plan = _Plan(mine, [ids[i] for i in positions], [hashes[i] for i in positions], self.batch_size,
                     positions=positions, all_units=len(ids), all_fingerprint=_units_fingerprint(ids, hashes))
        self._planned = (units, plan)
        return plan

    def _shard_batches(self, units: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
        """This shard's units and their batches, in input order."""
        plan = self._plan(units)
        return plan.units, [plan.batch(n) for n in range(plan.count)]

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this shard's lock (refused, naming the holder, when another run has it; reentrant)."""
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    # -- parts ------------------------------------------------------------------------------------

    def _read_part_meta(self, path: Path) -> _Part:
        """A part's own record; raises (OSError, ValueError) when the file does not read."""
        schema = pq.read_schema(path)
        raw = schema.metadata or {}
        if PART_KEY not in raw:
            raise ValueError("it has no record of its units (written by an older stepdata)")
        meta = json.loads(raw[PART_KEY])
        stepdata = json.loads(raw.get(b"stepdata", b"{}"))
        return _Part(path, meta, dict(stepdata.get("config") or {}))

    def _part_record(self, path: Path, *, quiet: bool = False) -> _Part | None:
        try:
            return self._read_part_meta(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not quiet:
                self._warn(f"part {path.name} in {path.parent} does not read ({_short(exc)}); redoing its batch")
            return None

    def _write_stamped(self, rows: pd.DataFrame, path: Path, config: Mapping[str, Any], key: bytes,
                       record: Mapping[str, Any], kind: str | None = None) -> None:
        table = to_arrow(rows, kind or self.kind, config)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               key: json.dumps(record, default=str).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    def _write_part(self, number: int, rows: pd.DataFrame, ids: list[str], hashes: list[str], input_fp: str,
                    config: Mapping[str, Any] | None = None, config_hash_: str | None = None,
                    reused: int = 0) -> dict[str, Any]:
        """Write batch ``number``'s rows as its part (with its record); returns the manifest entry."""
        errors = int(rows["error"].notna().sum())
        record = {"stage": self.stage, "shard": self.shard_label, "batch": number,
                  "config_hash": config_hash_ or self.hash, "input_fingerprint": input_fp,
                  "units_fingerprint": _units_fingerprint(ids, hashes), "unit_ids": ids, "unit_hashes": hashes,
                  "rows": len(rows), "error_rows": errors, "reused": reused}
        self._write_stamped(rows, self._part_path(number), config or (self.config | {"stage": self.stage}),
                            PART_KEY, record)
        return self._entry(record)

    @staticmethod
    def _entry(record: Mapping[str, Any]) -> dict[str, Any]:
        return {"units": len(record["unit_ids"]), "unit_ids": list(record["unit_ids"]),
                "units_fingerprint": record["units_fingerprint"], "config_hash": record["config_hash"],
                "rows": record["rows"], "error_rows": record["error_rows"], "reused": record.get("reused", 0)}

    def _part_matches(self, part: _Part | None, manifest: Mapping[str, Any], plan: _Plan, number: int) -> bool:
        """Whether ``part`` holds exactly batch ``number``'s units as they are now, made with an accepted config."""
        if part is None or part.meta.get("units_fingerprint") != plan.batch_fingerprint(number):
            return False
        recorded = part.path.name in manifest["batches"]
        return recorded or part.meta.get("config_hash") == self.hash

    # -- manifest ---------------------------------------------------------------------------------

    def _fresh_manifest(self, plan: _Plan | None) -> dict[str, Any]:
        return {"format": 2, "stage": self.stage, "config_hash": self.hash, "config": redact_secrets(self.config),
                "shard": self.shard_label,
                "input": {"fingerprint": plan.fingerprint, "units": len(plan.ids)} if plan is not None else None,
                "batches": {}}

    def _read_manifest(self) -> dict[str, Any] | None:
        """The recorded manifest (None when there is none), rebuilt from the parts when it does not read;
        refuses a changed config, naming the keys."""
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
            if not (isinstance(manifest, dict) and isinstance(manifest.get("config_hash"), str)
                    and isinstance(manifest.get("batches"), dict)
                    and all(isinstance(e, dict) for e in manifest["batches"].values())):
                raise ValueError("it is not a stepdata manifest")
        except (OSError, ValueError) as exc:
            manifest = self._rebuild_manifest(f"the manifest {self.manifest_path} does not read ({_short(exc)})")
            if manifest is None:
                return None
        if manifest["config_hash"] != self.hash and not self.allow_config_change:
            raise self._config_changed(manifest.get("config", {}), f"{self.parts} holds batches")
        return manifest

    def _config_changed(self, old: Mapping[str, Any], what_holds: str) -> ConfigChanged:
        """The refusal of a run whose output (``what_holds``) was made with config ``old``, naming each change."""
        changes = config_diff(old, self.config)
        what = ("; ".join(changes) if changes else
                "no recorded setting differs, so a redacted (secret) or unrecorded one did")
        problems = any(line.startswith("problems_table.") for line in changes)
        hint = (" (the problems table changed: --allow-config-change --redo-changed-units redoes only the units "
                "of the problems that changed)") if problems else ""
        return ConfigChanged(
            f"{what_holds} made with another config; changed: {what}. Rerun with the old "
            "options, pass --overwrite to start over, or --allow-config-change to keep the old batches "
            f"and continue with the new config{hint}"
        )

    def _rebuild_manifest(self, why: str) -> dict[str, Any] | None:
        """A manifest made from the records the parts of this shard carry (those that read)."""
        parts = [p for p in (self._part_record(path) for path in self._shard_part_files()) if p is not None]
        if not parts:
            self._warn(f"{why}; no part of this shard reads, so the run starts afresh")
            return None
        hashes = Counter(p.meta.get("config_hash") for p in parts)
        chosen = self.hash if self.hash in hashes else hashes.most_common(1)[0][0]
        mine = [p for p in parts if p.meta.get("config_hash") == chosen or self.allow_config_change]
        inputs = Counter(p.meta.get("input_fingerprint") for p in mine if p.meta.get("config_hash") == chosen)
        config = next(p.config for p in parts if p.meta.get("config_hash") == chosen)
        config = {k: v for k, v in config.items() if k != "stage" or "stage" in self.config}
        manifest = {"format": 2, "stage": self.stage, "config_hash": chosen, "config": config,
                    "shard": self.shard_label, "input": {"fingerprint": inputs.most_common(1)[0][0], "units": None},
                    "batches": {p.path.name: self._entry(p.meta) for p in mine}, "rebuilt": True}
        if self.carry_path.exists():
            manifest["carry"] = self.carry_path.name
        self._warn(f"{why}; rebuilt it from the {len(mine)} part(s) of this shard that read")
        return manifest

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        manifest.pop("rebuilt", None)
        write_text_atomic(self.manifest_path, json.dumps(manifest, separators=(",", ":")))

    # -- the input --------------------------------------------------------------------------------

    def _recorded_units(self, manifest: Mapping[str, Any]) -> dict[str, str]:
        """unit id -> content hash of every unit the recorded parts (and a pending carry) were made from."""
        units: dict[str, str] = {}
        paths = [self.parts / name for name in manifest["batches"]]
        if manifest.get("carry"):
            paths.append(self.carry_path)
        for path in paths:
            if not path.exists():
                continue
            part = self._part_record(path, quiet=True)
            if part is not None:
                units |= dict(zip(part.meta.get("unit_ids", []), part.meta.get("unit_hashes", [])))
        return units

    def _input_change(self, manifest: Mapping[str, Any], plan: _Plan) -> str | None:
        """Why the input is not the one the recorded batches were made from (None: it is, or nothing is recorded)."""
        if not manifest["batches"] and not manifest.get("carry"):
            return None
        recorded = manifest.get("input")
        how = ("rerun with --redo-changed-units to keep the rows of the units that did not change and redo the "
               "rest, or with --overwrite to start over")
        if not isinstance(recorded, Mapping) or not recorded.get("fingerprint"):
            return (f"{self.parts} holds batches made by an older stepdata that did not record its input, so they "
                    f"cannot be checked against this input; {how}")
        if recorded["fingerprint"] == plan.fingerprint:
            return None
        old = self._recorded_units(manifest)
        now = dict(zip(plan.ids, plan.hashes))
        changed = [u for u in plan.ids if u in old and old[u] != now[u]]
        new = [u for u in plan.ids if u not in old]
        gone = [u for u in old if u not in now]
        if changed or new or gone:
            counts = f"{len(changed)} changed, {len(new)} new, {len(gone)} gone"
            example, what = next((u, w) for us, w in ((changed, "changed"), (new, "is new"), (gone, "is gone"))
                                 for u in us)
            detail = f"{counts} (e.g. unit {example!r} {what})"
        else:
            detail = "the same units in another order, so the batches would hold other units"
        return (f"the input is not the one the batches in {self.parts} were made from ({self.key_column} units of "
                f"this shard: {detail}); {how}")

    def _rebase(self, manifest: dict[str, Any], plan: _Plan) -> dict[str, Any]:
        """Set aside the rows of the units that did not change (``carry``) and start a manifest for this input.

        Safe to kill at any point: the carry is written before the manifest names it, and
        the old parts are deleted only after the new manifest is saved.
        """
        now = dict(zip(plan.ids, plan.hashes))
        keep: dict[str, pd.DataFrame] = {}
        sources = ([self.carry_path] if self.carry_path.exists() else []) + self._shard_part_files()
        for path in sources:
            part = self._part_record(path, quiet=True)
            if part is None or not (path == self.carry_path or path.name in manifest["batches"]
                                    or part.meta.get("config_hash") == self.hash):
                continue
            wanted = {u for u, h in zip(part.meta.get("unit_ids", []), part.meta.get("unit_hashes", []))
                      if now.get(u) == h and u not in keep}
            if not wanted:
                continue
            try:
                rows = read_table(path)
            except (OSError, ValueError) as exc:
                self._warn(f"part {path.name} in {path.parent} does not read ({_short(exc)}); its units are redone")
                continue
            for unit, group in rows.groupby(rows[self.key_column].astype(str), sort=False):
                if unit in wanted and group["error"].isna().all():
                    keep[unit] = group
        fresh = self._fresh_manifest(plan) | {"earlier_config_hashes": manifest.get("earlier_config_hashes", [])}
        if keep:
            ids = [u for u in plan.ids if u in keep]
            rows = pd.concat([keep[u] for u in ids], ignore_index=True)
            record = {"unit_ids": ids, "unit_hashes": [now[u] for u in ids], "config_hash": self.hash,
                      "units_fingerprint": _units_fingerprint(ids, [now[u] for u in ids])}
            self._write_stamped(rows, self.carry_path, self.config | {"stage": self.stage}, PART_KEY, record)
            fresh["carry"] = self.carry_path.name
        self._save_manifest(fresh)
        for path in self._shard_part_files():
            path.unlink(missing_ok=True)
        if not keep:
            self.carry_path.unlink(missing_ok=True)
        log.info("%s: the input changed; kept the rows of %d unchanged unit(s), redoing %d", self.final, len(keep),
                 len(plan.ids) - len(keep))
        return fresh

    def _read_carry(self, manifest: Mapping[str, Any]) -> dict[str, tuple[str, pd.DataFrame]]:
        """unit id -> (hash, rows) set aside by :meth:`_rebase` ({} when there is none or it does not read)."""
        if not manifest.get("carry") or not self.carry_path.exists():
            return {}
        try:
            meta = self._read_part_meta(self.carry_path).meta
            rows = read_table(self.carry_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._warn(f"{self.carry_path} does not read ({_short(exc)}); the units it kept are redone")
            return {}
        hashes = dict(zip(meta["unit_ids"], meta["unit_hashes"]))
        return {u: (hashes[u], group) for u, group in rows.groupby(rows[self.key_column].astype(str), sort=False)
                if u in hashes}

    # -- what is done -----------------------------------------------------------------------------

    def _stamp(self, plan: _Plan, parts: list[_Part | dict[str, Any]]) -> dict[str, Any]:
        """The record a finished table carries: config, input and a hash of the parts it was assembled from."""
        records = [p.meta if isinstance(p, _Part) else p for p in parts]
        text = "\n".join(f"{r['units_fingerprint']}:{r['rows']}:{r['error_rows']}:{r['config_hash']}" for r in records)
        stamp = {"config_hash": self.hash, "input_fingerprint": plan.fingerprint, "parts": _digest(text)}
        index, total = self.shard
        if total > 1:  # what a merge checks: coverage of the whole input, and where each unit goes back
            stamp["shard"] = {"rank": index, "world_size": total, "key_column": self.key_column,
                              "units": plan.all_units, "input_fingerprint": plan.all_fingerprint,
                              "positions": plan.positions, "unit_ids": plan.ids, "unit_hashes": plan.hashes}
        return stamp

    def is_current(self, path: str | os.PathLike) -> bool:
        """Whether the table at ``path`` reads and was assembled by this run from the parts now on disk
        (after :meth:`check` or :meth:`run`)."""
        return self.stamp is not None and read_stamp(path) == self.stamp

    def write_output(self, table: pd.DataFrame, path: str | os.PathLike, kind: str, config: Mapping[str, Any]) -> None:
        """Write a table this run finished (the shard's table, a pair stage's pairs) with the run's stamp."""
        self._write_stamped(table, Path(path), config, STAMP_KEY, self.stamp or {}, kind=kind)

    def check(self, units: pd.DataFrame) -> RunCheck:
        """Look at the output folder before any work: call it before loading an engine.

        Loading a model takes seconds to minutes; a changed config, a changed input or a
        finished run is known from the manifest and the parts' footers alone. Raises
        ConfigChanged naming every setting that changed (old -> new) unless
        ``allow_config_change``; reports a changed input (``input_changed``) and whether the
        shard is already finished (its output and summary written from the parts now on
        disk, every batch done for these units and no error rows left to retry), so a
        caller can stop without loading anything. Writes and deletes nothing (with
        ``overwrite`` the old batches go only when :meth:`run` starts).
        """
        plan = self._plan(units)
        if self.overwrite:
            return RunCheck(plan.count, 0, 0, finished=False, starting_over=True)
        manifest = self._read_manifest()
        merged = self._check_merged(plan) if manifest is None and self.shard[1] == 1 else None
        if merged is not None:
            return merged
        manifest = manifest or self._fresh_manifest(plan)
        change = self._input_change(manifest, plan)
        if change is not None:
            return RunCheck(plan.count, 0, 0, finished=False, input_changed=change)
        done = errors = 0
        found: list[_Part] = []
        for number in range(plan.count):
            path = self._part_path(number)
            part = self._part_record(path, quiet=True) if path.exists() else None
            if self._part_matches(part, manifest, plan, number):
                errors += part.meta.get("error_rows", 0)
                done += part.meta.get("error_rows", 0) == 0
                found.append(part)
        self.stamp = self._stamp(plan, found) if len(found) == plan.count else None
        summary_path = self.final.with_name(self.final.name + ".summary.json")
        summary = None
        if (done == plan.count and manifest["config_hash"] == self.hash and not manifest.get("carry")
                and self.is_current(self.final)):
            try:
                summary = json.loads(summary_path.read_text())
            except (OSError, ValueError):
                summary = None
            if not isinstance(summary, dict) or summary.get("run_fingerprint") != self.stamp["parts"]:
                summary = None
        return RunCheck(plan.count, done, errors, finished=summary is not None, summary=summary)

    def _check_merged(self, plan: _Plan) -> RunCheck | None:
        """What an unsharded run finds when ``self.final`` is a table merged from shards (None: it is not one).

        Made with this config from this whole input (and its summary from the same merge), it is
        finished: a recipe going on after a SLURM array loads no engine. Made with another config
        it is refused as a finished run's batches are (ConfigChanged naming the settings); from
        another input it is a changed input.
        """
        stamp = read_stamp(self.final)
        if not (isinstance(stamp, dict) and stamp.get("merged")):
            return None
        if stamp.get("config_hash") != self.hash:
            if self.allow_config_change:
                return None
            recorded = {k: v for k, v in (read_metadata(self.final).get("config") or {}).items()
                        if k not in ("shard", "merged_from")}
            raise self._config_changed(recorded, f"{self.final} (merged from shards) was")
        if stamp.get("input_fingerprint") != plan.fingerprint:
            return RunCheck(plan.count, 0, 0, finished=False, input_changed=(
                f"{self.final} was merged from shards of another input ({stamp['merged'].get('units')} units); "
                "rerun with --redo-changed-units or --overwrite to make it again from this input"))
        try:
            summary = json.loads(self.final.with_name(self.final.name + ".summary.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(summary, dict) or summary.get("run_fingerprint") != stamp.get("parts"):
            return None
        self.stamp = stamp  # the merged stamp: a pair stage's pairs table carries it too
        return RunCheck(plan.count, plan.count, int(summary.get("error_rows") or 0), finished=True, summary=summary)

    # -- the run --------------------------------------------------------------------------------

    def _remove_leftovers(self) -> None:
        """Delete the ``.tmp`` files killed writes of this shard left (we hold its lock: none is being written)."""
        names = {self.final.name, self.final.name + ".summary.json"}
        for path in self.companions:
            names |= {path.name, path.name + ".summary.json"}
        folders = [(self.final.parent, lambda name: name in names),
                   (self.parts, lambda name: self.shard_label in name)]
        for folder, ours in folders:
            if not folder.is_dir():
                continue
            for path in folder.glob(".*.tmp"):
                match = _TMP.match(path.name)
                if match and ours(match["name"]) and int(match["pid"]) != os.getpid():
                    path.unlink(missing_ok=True)
                    log.info("removed %s, left by a killed write", path)

    def _delete_shard(self) -> None:
        for path in self.parts.glob(f"*{self.shard_label}*"):
            if not path.name.startswith("lock-"):
                path.unlink()

    def run(
        self, units: pd.DataFrame, process: ProcessBatch, stage_stats: Callable[[pd.DataFrame], dict] | None = None,
        tokens_done: Callable[[], int] | None = None, map_batches: MapBatches | None = None,
    ) -> pd.DataFrame:
        """Process every batch of this shard's units not yet done; return the shard's output table.

        ``tokens_done`` (generated tokens so far in this run) adds tokens/s to the progress lines.
        ``map_batches`` runs the batches' work (default: ``process`` on each, one after the
        other, here); a cluster executor passes one that spreads it over workers and yields
        each batch's rows as they finish, in any order. Every finished batch is written and
        recorded at once, so a kill loses only the batches in flight.
        Holds the shard's lock throughout; a full disk raises :class:`DiskFull`.
        """
        self._batches_done = 0
        plan = self._plan(units)
        try:
            with self.locked():
                return self._run(plan, map_batches or sequential(process), stage_stats, tokens_done)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full(exc, f"The finished batches ({self._batches_done} of {plan.count}) are kept in "
                                 f"{self.parts}") from None

    def _run(self, plan: _Plan, map_batches: MapBatches, stage_stats: Callable[[pd.DataFrame], dict] | None,
             tokens_done: Callable[[], int] | None) -> pd.DataFrame:
        start = time.monotonic()
        index, total = self.shard
        self.parts.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        if self.overwrite:
            self._delete_shard()
        manifest = self._read_manifest()
        if manifest is None:
            manifest = self._fresh_manifest(plan)
        elif manifest.get("rebuilt"):
            self._save_manifest(manifest)
        if manifest["config_hash"] != self.hash:
            manifest.setdefault("earlier_config_hashes", []).append(manifest["config_hash"])
            manifest["config_hash"] = self.hash
        change = self._input_change(manifest, plan)
        if change is not None:
            if not self.redo_changed_units:
                raise InputChanged(change)
            manifest = self._rebase(manifest, plan)
        elif (manifest.get("input") or {}).get("fingerprint") != plan.fingerprint:
            manifest["input"] = {"fingerprint": plan.fingerprint, "units": len(plan.ids)}  # nothing recorded yet
        carry = self._read_carry(manifest)
        summary = RunSummary(self.stage, str(self.final), f"{index}/{total}", self.hash, units=len(plan.ids),
                             batches_total=plan.count, input_fingerprint=plan.fingerprint)
        done: dict[int, tuple[pd.DataFrame, dict[str, Any]]] = {}  # batch -> (rows, part record)
        jobs: dict[int, _Job] = {}
        progress = _Progress(self, len(plan.ids), start, tokens_done)
        for number in range(plan.count):
            found = self._finished_part(manifest, plan, number)
            if found is None:
                jobs[number] = self._new_job(plan, number, carry)
            elif found[1]["error"].notna().any():
                jobs[number] = self._retry_job(plan, number, *found)
            else:
                done[number] = (found[1], found[0].meta)
                summary.batches_skipped += 1
                progress.batch(len(plan.batch_ids(number)), skipped=True)
        for number in [n for n, job in jobs.items() if job.todo.empty]:  # every unit carried over: nothing to run
            done[number] = self._finish_job(jobs.pop(number), None, manifest, summary)
            progress.batch(len(plan.batch_ids(number)))
        for number, rows in map_batches([(n, job.todo) for n, job in jobs.items()]):
            done[number] = self._finish_job(jobs.pop(number), rows, manifest, summary)
            self._batches_done += 1
            progress.batch(len(plan.batch_ids(number)))
        if jobs:
            raise RunError(f"batches {sorted(jobs)} were handed out but never came back; the finished ones are kept "
                           f"in {self.parts}: run the same command again")
        frames = [done[number][0] for number in range(plan.count)]
        records = [done[number][1] for number in range(plan.count)]
        summary.units_reused = sum(int(record.get("reused", 0)) for record in records)
        carried = manifest.pop("carry", None)
        self._save_manifest(manifest)  # every batch recorded, under this config
        if carried:
            self.carry_path.unlink(missing_ok=True)
        output = self._concat(frames)
        self.stamp = self._stamp(plan, records)
        summary.run_fingerprint = self.stamp["parts"]
        summary.rows = len(output)
        errors = output["error"].dropna()
        summary.error_rows = len(errors)
        summary.errors_by_kind = {k: int(v) for k, v in errors.map(_error_kind).value_counts().items()}
        summary.seconds = round(time.monotonic() - start, 2)
        summary.stage_stats = stage_stats(output) if stage_stats else {}
        self.write_output(output, self.final, self.kind, self.config | {"stage": self.stage, "shard": f"{index}/{total}"})
        summary_path = self.final.with_name(self.final.name + ".summary.json")
        write_text_atomic(summary_path, json.dumps(scrub_object(summary.as_dict()), indent=1, default=str))
        self.summary = summary
        return output

    def _new_job(self, plan: _Plan, number: int, carry: Mapping[str, tuple[str, pd.DataFrame]]) -> _Job:
        """Batch ``number`` to make: the units set aside unchanged (``carry``) are reused, the rest processed."""
        batch, ids = plan.batch(number), plan.batch_ids(number)
        hashes = plan.hashes[plan.span(number)]
        kept = [u for u, h in zip(ids, hashes) if u in carry and carry[u][0] == h]
        todo = batch[~batch[self.key_column].astype(str).isin(kept)] if kept else batch
        return _Job(number, todo, ids, hashes, [carry[u][1] for u in kept], plan.fingerprint)

    def _retry_job(self, plan: _Plan, number: int, part: _Part, rows: pd.DataFrame) -> _Job:
        """Batch ``number``, done but with error rows: its failed units are processed again."""
        batch = plan.batch(number)
        failed = set(rows.loc[rows["error"].notna(), self.key_column].astype(str))
        kept = rows[~rows[self.key_column].astype(str).isin(failed)]
        return _Job(number, batch[batch[self.key_column].astype(str).isin(failed)], list(part.meta["unit_ids"]),
                    list(part.meta["unit_hashes"]), [kept], part.meta.get("input_fingerprint", ""), retry_of=part)

    def _finish_job(self, job: _Job, rows: pd.DataFrame | None, manifest: dict[str, Any],
                    summary: RunSummary) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Write a job's batch as its part (the kept rows and the new ones, in unit order) and record it."""
        frames = job.kept + ([rows] if rows is not None else [])
        merged = frames[0] if len(frames) == 1 else self._in_unit_order(pd.concat(frames, ignore_index=True), job.ids)
        part = job.retry_of
        if part is None:
            entry = self._write_part(job.number, merged, job.ids, job.hashes, job.input_fingerprint,
                                     reused=len(job.kept))
            summary.batches_run += 1
            record = entry | {"unit_ids": job.ids}
        else:
            meta = part.meta
            entry = self._write_part(job.number, merged, job.ids, job.hashes, job.input_fingerprint,
                                     config=part.config, config_hash_=meta.get("config_hash"),
                                     reused=meta.get("reused", 0))
            log.info("retried %d unit(s) with errors in %s", len(job.todo), part.path.name)
            summary.rows_retried += len(job.todo)
            summary.batches_skipped += 1
            record = dict(meta) | {"rows": entry["rows"], "error_rows": entry["error_rows"]}
        manifest["batches"][self._part_path(job.number).name] = entry
        self._save_manifest(manifest)
        return merged, record

    def _finished_part(self, manifest: dict[str, Any], plan: _Plan, number: int) -> tuple[_Part, pd.DataFrame] | None:
        """Batch ``number``'s part and rows when it is done for these units (None: the batch is to be made).

        A recorded part that does not read, or whose rows are not its units', is named and redone;
        a part written but not recorded (killed before the manifest was saved) is kept when it holds
        exactly this batch's units made with this config.
        """
        path = self._part_path(number)
        name = path.name
        if not path.exists():
            if name in manifest["batches"]:
                self._warn(f"part {name} in {self.parts} is recorded but missing; redoing its batch")
            return None
        recorded = name in manifest["batches"]
        part = self._part_record(path, quiet=not recorded)
        if not self._part_matches(part, manifest, plan, number):
            return None
        try:
            rows = read_table(path)
        except (OSError, ValueError) as exc:
            self._warn(f"part {name} in {self.parts} does not read ({_short(exc)}); redoing its batch")
            return None
        ids = plan.batch_ids(number)
        if not set(rows[self.key_column].astype(str)) <= set(ids) or len(rows) != part.meta.get("rows"):
            self._warn(f"part {name} in {self.parts} does not hold the rows its record lists; redoing its batch")
            return None
        if not recorded:
            manifest["batches"][name] = self._entry(part.meta)
            self._save_manifest(manifest)
            log.info("kept %s, written before the run was stopped but not yet recorded", name)
        return part, rows

    def _in_unit_order(self, rows: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
        order = {k: i for i, k in enumerate(ids)}
        return rows.iloc[rows[self.key_column].astype(str).map(order).argsort(kind="stable")].reset_index(drop=True)

    def _concat(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        if not frames:
            from stepdata.schema import schema_for

            return pd.DataFrame(columns=schema_for(self.kind).names)
        return pd.concat(frames, ignore_index=True)


class _Progress:
    """One progress line after each batch (to stderr), with tokens/s and an ETA.

    The ETA is the pace of the batches this run processed (see ``EtaEstimator``):
    a resumed run's finished batches (``skipped``) shorten what is left but say nothing
    of how fast the rest goes, and until the run has shown its pace the line says so.
    """

    def __init__(self, run: StageRun, total: int, start: float, tokens: Callable[[], int] | None) -> None:
        from stepdata.generation.progress import EtaEstimator

        self.run, self.total, self.start, self.tokens = run, total, start, tokens
        self.done = 0
        self.estimator = EtaEstimator(total, baseline="start", started=start)

    def batch(self, units: int, *, skipped: bool = False) -> None:
        self.done += units
        if skipped:
            self.estimator.skip(units)
        else:
            self.estimator.update(units)
        if not self.run.progress:
            return
        elapsed = time.monotonic() - self.start
        rate = f", {self.tokens() / elapsed:.1f} tok/s" if self.tokens is not None and elapsed > 0 else ""
        index, shards = self.run.shard
        print(f"{self.run.stage} [{index}/{shards}]: {self.done}/{self.total} units{rate}, {elapsed:.0f}s, "
              f"{self.estimator.describe()}", file=sys.stderr, flush=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
