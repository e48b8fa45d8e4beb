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
  unless told to (``allow_config_change``) or told to start over (``overwrite``).

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

from stepdata.io import read_metadata, read_table, redact_secrets, write_table

log = logging.getLogger(__name__)

ProcessBatch = Callable[[pd.DataFrame], pd.DataFrame]


class ConfigChanged(RuntimeError):
    """The output folder holds batches made with a different config."""


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable hash of a stage config (secrets never enter it)."""
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

    def _load_manifest(self) -> dict[str, Any]:
        if self.overwrite and self.parts.exists():
            for path in self.parts.glob(f"*{self.shard_label}*"):
                path.unlink()
        if not self.manifest_path.exists():
            return {"stage": self.stage, "config_hash": self.hash, "config": redact_secrets(self.config),
                    "shard": self.shard_label, "batches": {}}
        manifest = json.loads(self.manifest_path.read_text())
        if manifest["config_hash"] != self.hash and not self.allow_config_change:
            raise ConfigChanged(
                f"{self.parts} holds batches made with another config (hash {manifest['config_hash']}, now "
                f"{self.hash}); rerun with the old options, pass --overwrite to start over, or "
                "--allow-config-change to keep the old batches and continue with the new config"
            )
        if manifest["config_hash"] != self.hash:
            manifest.setdefault("earlier_config_hashes", []).append(manifest["config_hash"])
            manifest["config_hash"] = self.hash
        return manifest

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.manifest_path)

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
        keys = units[self.key_column].astype(str)
        if keys.duplicated().any():
            raise ValueError(f"input has repeated {self.key_column} values, e.g. {keys[keys.duplicated()].iloc[0]!r}")
        mine = units[[shard_of(k, total) == index for k in keys]].reset_index(drop=True)
        batches = [mine.iloc[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        self.parts.mkdir(parents=True, exist_ok=True)
        manifest = self._load_manifest()
        summary = RunSummary(self.stage, str(self.final), f"{index}/{total}", self.hash, units=len(mine),
                             batches_total=len(batches))
        done_units = 0
        for number, batch in enumerate(batches):
            name = f"part-{self.shard_label}-{number:06d}.parquet"
            path = self.parts / name
            entry = manifest["batches"].get(name)
            if entry is not None and path.exists():
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
            self._report(done_units, len(mine), start, tokens_done() if tokens_done else None)
        output = self._assemble(len(batches))
        summary.rows = len(output)
        errors = output["error"].dropna()
        summary.error_rows = len(errors)
        summary.errors_by_kind = {k: int(v) for k, v in errors.map(_error_kind).value_counts().items()}
        summary.seconds = round(time.monotonic() - start, 2)
        summary.stage_stats = stage_stats(output) if stage_stats else {}
        write_table(output, self.final, self.kind, config=self.config | {"stage": self.stage, "shard": f"{index}/{total}"})
        summary_path = self.final.with_name(self.final.name + ".summary.json")
        summary_path.write_text(json.dumps(summary.as_dict(), indent=1, default=str))
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

    def _report(self, done: int, total: int, start: float, tokens: int | None) -> None:
        if not self.progress:
            return
        elapsed = time.monotonic() - start
        eta = (total - done) * elapsed / done if done else 0.0
        rate = f", {tokens / elapsed:.1f} tok/s" if tokens is not None and elapsed > 0 else ""
        print(f"{self.stage} [{self.shard[0]}/{self.shard[1]}]: {done}/{total} units{rate}, {elapsed:.0f}s, "
              f"ETA {eta:.0f}s", file=sys.stderr, flush=True)


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
