"""The run machinery every stage shares: batches, shards, a manifest, resume.

A stage maps units of an input table (problems, rollouts) to rows of an output
table. Units are split into batches; each finished batch is written as its own
Parquet part (atomically) and then recorded in a manifest, so a run killed at any
moment and started again with the same command:

- skips every recorded batch, redoes a batch that was written but not recorded
  (same seeds, same rows: nothing is doubled because the part is replaced),
- retries the rows of recorded batches that carry an ``error`` (a request that ran
  out of retries, an answer check that timed out) and replaces them in place,
- refuses to continue if the stage's config changed (its hash is in the manifest)
  unless told to (``allow_config_change``) or told to start over (``overwrite``),
  naming the settings that changed; :meth:`StageRun.check` does this (and says
  whether the run is already finished) before any engine is loaded.

``shard=(i, N)`` keeps the units whose key hashes to i modulo N, so N machines
(a SLURM array, a Ray job) can share a stage; :func:`merge_outputs` joins the
shard outputs.

Layout next to ``out`` (``rollouts.parquet``): ``rollouts.parquet.parts/`` holds
``manifest-<shard>.json`` and the parts; ``out`` itself (or, with N > 1 shards,
``rollouts.shard-00002-of-00008.parquet``) appears when the shard is complete,
with ``<out>.summary.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.io import (
    read_metadata,
    read_table,
    write_table,
    write_text_atomic,
)
from stepdata.secrets import redact_secrets, scrub_object

log = logging.getLogger(__name__)

ProcessBatch = Callable[[pd.DataFrame], pd.DataFrame]


class ConfigChanged(RuntimeError):
    """The output folder holds batches made with a different config."""


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


@dataclass(frozen=True)
class RunCheck:
    """What :meth:`StageRun.check` found in the output folder before any work (or engine) started."""

    batches_total: int
    batches_done: int
    error_rows: int
    finished: bool
    starting_over: bool = False
    summary: dict[str, Any] | None = None


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
    seconds: float = 0.0
    stage_stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _error_kind(message: str) -> str:
    return message.split(":", 1)[0].strip() or "error"


class StageRun:
    """Runs ``process`` over the units of one shard, batch by batch, resumably."""

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
        overwrite: bool = False,
        allow_config_change: bool = False,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.stage, self.kind, self.key_column = stage, kind, key_column
        self.out = Path(out)
        self.config = dict(config) | {"batch_size": batch_size}
        self.hash = config_hash(self.config)
        self.batch_size = batch_size
        self.shard = shard
        self.overwrite, self.allow_config_change, self.progress = overwrite, allow_config_change, progress
        index, total = shard
        self.shard_label = f"{index:05d}-of-{total:05d}"
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.manifest_path = self.parts / f"manifest-{self.shard_label}.json"
        self.final = self.out if total == 1 else self.out.with_name(f"{self.out.stem}.shard-{self.shard_label}{self.out.suffix}")

    # -- manifest -------------------------------------------------------------------------

    def _read_manifest(self) -> dict[str, Any] | None:
        """The recorded manifest (None when there is none); refuses a changed config, naming the keys."""
        if not self.manifest_path.exists():
            return None
        manifest = json.loads(self.manifest_path.read_text())
        if manifest["config_hash"] != self.hash and not self.allow_config_change:
            changes = config_diff(manifest.get("config", {}), self.config)
            what = ("; ".join(changes) if changes else
                    "no recorded setting differs, so a redacted (secret) or unrecorded one did")
            raise ConfigChanged(
                f"{self.parts} holds batches made with another config; changed: {what}. Rerun with the old "
                "options, pass --overwrite to start over, or --allow-config-change to keep the old batches "
                "and continue with the new config"
            )
        return manifest

    def _load_manifest(self) -> dict[str, Any]:
        if self.overwrite and self.parts.exists():
            for path in self.parts.glob(f"*{self.shard_label}*"):
                path.unlink()
        manifest = self._read_manifest()
        if manifest is None:
            return {"stage": self.stage, "config_hash": self.hash, "config": redact_secrets(self.config),
                    "shard": self.shard_label, "batches": {}}
        if manifest["config_hash"] != self.hash:
            manifest.setdefault("earlier_config_hashes", []).append(manifest["config_hash"])
            manifest["config_hash"] = self.hash
        return manifest

    def _shard_batches(self, units: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
        """This shard's units and their batches, in input order (the same split on every run)."""
        index, total = self.shard
        keys = units[self.key_column].astype(str)
        if keys.duplicated().any():
            raise ValueError(f"input has repeated {self.key_column} values, e.g. {keys[keys.duplicated()].iloc[0]!r}")
        mine = units[[shard_of(k, total) == index for k in keys]].reset_index(drop=True)
        return mine, [mine.iloc[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def check(self, units: pd.DataFrame) -> RunCheck:
        """Look at the output folder before any work: call it before loading an engine.

        Loading a model takes seconds to minutes; a changed config or a finished run
        is known from the manifest alone. Raises ConfigChanged naming every setting
        that changed (old -> new) unless ``allow_config_change``; reports whether the
        shard is already finished (its output and summary written, every batch
        recorded with as many units as now and no error rows left to retry), so a
        caller can stop without loading anything. Writes and deletes nothing (with
        ``overwrite`` the old batches go only when :meth:`run` starts).
        """
        _, batches = self._shard_batches(units)
        if self.overwrite:
            return RunCheck(len(batches), 0, 0, finished=False, starting_over=True)
        manifest = self._read_manifest() or {"config_hash": self.hash, "batches": {}}
        done = errors = 0
        for number, batch in enumerate(batches):
            name = f"part-{self.shard_label}-{number:06d}.parquet"
            entry = manifest["batches"].get(name)
            if entry is not None and (self.parts / name).exists() and entry.get("units") == len(batch):
                errors += entry.get("error_rows", 0)
                done += entry.get("error_rows", 0) == 0
        summary_path = self.final.with_name(self.final.name + ".summary.json")
        finished = (done == len(batches) and manifest["config_hash"] == self.hash and self.final.exists()
                    and summary_path.exists())
        summary = json.loads(summary_path.read_text()) if finished else None
        return RunCheck(len(batches), done, errors, finished=finished, summary=summary)

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1))

    # -- the run --------------------------------------------------------------------------

    def run(
        self, units: pd.DataFrame, process: ProcessBatch, stage_stats: Callable[[pd.DataFrame], dict] | None = None,
        tokens_done: Callable[[], int] | None = None,
    ) -> pd.DataFrame:
        """Process every batch of this shard's units not yet done; return the shard's output table.

        ``tokens_done`` (generated tokens so far in this run) adds tokens/s to the progress lines.
        """
        start = time.monotonic()
        index, total = self.shard
        mine, batches = self._shard_batches(units)
        self.parts.mkdir(parents=True, exist_ok=True)
        manifest = self._load_manifest()
        summary = RunSummary(self.stage, str(self.final), f"{index}/{total}", self.hash, units=len(mine),
                             batches_total=len(batches))
        done_units = 0
        for number, batch in enumerate(batches):
            name = f"part-{self.shard_label}-{number:06d}.parquet"
            path = self.parts / name
            entry = manifest["batches"].get(name)
            skipped = entry is not None and path.exists()
            if skipped:
                if entry.get("error_rows", 0):
                    retried, entry["error_rows"] = self._retry_errors(path, batch, process)
                    summary.rows_retried += retried
                    self._save_manifest(manifest)
                summary.batches_skipped += 1
            else:
                rows = process(batch)
                write_table(rows, path, self.kind, config=self.config | {"stage": self.stage})
                manifest["batches"][name] = {"units": len(batch), "rows": len(rows),
                                             "error_rows": int(rows["error"].notna().sum())}
                self._save_manifest(manifest)
                summary.batches_run += 1
            done_units += len(batch)
            self._report(done_units, len(mine), start, tokens_done() if tokens_done else None, skipped=skipped)
        output = self._assemble(len(batches))
        summary.rows = len(output)
        errors = output["error"].dropna()
        summary.error_rows = len(errors)
        summary.errors_by_kind = {k: int(v) for k, v in errors.map(_error_kind).value_counts().items()}
        summary.seconds = round(time.monotonic() - start, 2)
        summary.stage_stats = stage_stats(output) if stage_stats else {}
        write_table(output, self.final, self.kind, config=self.config | {"stage": self.stage, "shard": f"{index}/{total}"})
        summary_path = self.final.with_name(self.final.name + ".summary.json")
        write_text_atomic(summary_path, json.dumps(scrub_object(summary.as_dict()), indent=1, default=str))
        self.summary = summary
        return output

    def _retry_errors(self, path: Path, batch: pd.DataFrame, process: ProcessBatch) -> tuple[int, int]:
        """Redo the units whose rows carry an error and put the new rows in their place.

        Returns (units retried, rows still carrying an error).
        """
        rows = read_table(path)
        failed_keys = set(rows.loc[rows["error"].notna(), self.key_column].astype(str))
        if not failed_keys:
            return 0, 0
        redo = batch[batch[self.key_column].astype(str).isin(failed_keys)]
        fresh = process(redo)
        kept = rows[~rows[self.key_column].astype(str).isin(failed_keys)]
        order = {k: i for i, k in enumerate(batch[self.key_column].astype(str))}
        merged = pd.concat([kept, fresh], ignore_index=True)
        merged = merged.iloc[merged[self.key_column].astype(str).map(order).argsort(kind="stable")].reset_index(drop=True)
        write_table(merged, path, self.kind, config=read_metadata(path).get("config", {}))
        log.info("retried %d unit(s) with errors in %s", len(redo), path.name)
        return len(redo), int(merged["error"].notna().sum())

    def _assemble(self, count: int) -> pd.DataFrame:
        frames = [read_table(self.parts / f"part-{self.shard_label}-{n:06d}.parquet") for n in range(count)]
        if not frames:
            from stepdata.schema import schema_for

            return pd.DataFrame(columns=schema_for(self.kind).names)
        return pd.concat(frames, ignore_index=True)

    def _report(self, done: int, total: int, start: float, tokens: int | None, *, skipped: bool = False) -> None:
        """One progress line after each batch; ``skipped``: the batch was found done (it costs no time).

        The ETA is the pace of the batches this run processed (see ``EtaEstimator``):
        a resumed run's finished batches shorten what is left but say nothing of how
        fast the rest goes, and until the run has shown its pace the line says so.
        """
        from stepdata.generation.progress import EtaEstimator

        estimator = getattr(self, "_eta", None)
        if estimator is None or getattr(self, "_eta_start", None) != start:
            estimator = self._eta = EtaEstimator(total, baseline="start", started=start)
            self._eta_start = start
        if skipped:
            estimator.skip(done - estimator.done)
        else:
            estimator.update(done - estimator.done)
        if not self.progress:
            return
        elapsed = time.monotonic() - start
        rate = f", {tokens / elapsed:.1f} tok/s" if tokens is not None and elapsed > 0 else ""
        print(f"{self.stage} [{self.shard[0]}/{self.shard[1]}]: {done}/{total} units{rate}, {elapsed:.0f}s, "
              f"{estimator.describe()}", file=sys.stderr, flush=True)


def merge_outputs(paths: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Join shard outputs of one stage into one table (same kind, same config hash)."""
    if not paths:
        raise ValueError("nothing to merge")
    metas = [read_metadata(p) for p in paths]
    kinds = {m.get("kind") for m in metas}
    if len(kinds) != 1:
        raise ValueError(f"cannot merge tables of different kinds: {sorted(map(str, kinds))}")
    hashes = {config_hash({k: v for k, v in m.get("config", {}).items() if k != "shard"}) for m in metas}
    if len(hashes) != 1:
        raise ValueError("the shards were made with different configs; refusing to merge")
    frames = [read_table(p) for p in paths]
    merged = pd.concat(frames, ignore_index=True)
    config = {k: v for k, v in metas[0].get("config", {}).items() if k != "shard"} | {"merged_from": [str(p) for p in paths]}
    write_table(merged, out, kinds.pop(), config=config)
    return merged
