"""Merging the shards of one stage run into the table an unsharded run would have written.

Each finished shard's table carries, in its run stamp, a ``shard`` record (see
:mod:`stepdata.pipeline.run`): its rank and world size, the whole input's unit count
and fingerprint, and its own units' global positions, ids and hashes. So a merge can
refuse, naming the ranks, whatever would make the merged table differ from the
unsharded one: a missing rank, a rank given twice, shards of different world sizes,
configs or inputs, a shard whose table is not finished, a unit in two shards, units
that do not make up the recorded input. It then puts the rows back in input order,
runs the stage's ``finalize`` over the whole output (a pair stage flattens its attempts
into pairs with the per-problem caps applied globally) and writes the summary from
the stage's ``stats``. The merged table is stamped with the config hash and the whole
input's fingerprint, so an unsharded run of the same stage, config and input (a
recipe going on after a SLURM array) finds it finished and loads no engine.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.io import read_metadata, read_table, write_text_atomic
from stepdata.pipeline.pairing import attempts_path_for
from stepdata.pipeline.run import (
    RunError,
    RunSummary,
    StageRun,
    _digest,
    _error_kind,
    _units_fingerprint,
    config_diff,
    read_stamp,
)
from stepdata.secrets import scrub_object

SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<rank>\d{5})-of-(?P<world>\d{5})(?P<suffix>\.[^.]+)$")


class MergeError(RunError):
    """Shards that cannot be merged into the unsharded result; the message names the ranks and what differs."""


@dataclass
class Shard:
    """A finished shard table as its stamp and summary describe it."""

    path: Path
    kind: str
    config: dict[str, Any]  # the recorded config, without its shard
    stamp: dict[str, Any]
    summary: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        return self.stamp["shard"]

    @property
    def rank(self) -> int:
        return int(self.record["rank"])

    @property
    def world_size(self) -> int:
        return int(self.record["world_size"])

    @property
    def stage(self) -> str:
        return str(self.config.get("stage"))

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.path})"


@dataclass
class MergeResult:
    """What a merge wrote: the stage's table (attempts for a pair stage), its pairs, the summary."""

    table: pd.DataFrame
    path: Path
    summary: dict[str, Any]
    shards: list[Path]
    pairs: pd.DataFrame | None = None
    pairs_path: Path | None = None


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` of ``world_size`` writes the table of ``out`` (``x.shard-00001-of-00004.parquet``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{rank:05d}-of-{world_size:05d}{out.suffix}")


def _attempts_shard(path: Path) -> Path:
    """The attempts shard a pair stage wrote beside its pairs shard ``x.shard-*.parquet``."""
    match = SHARD_NAME.match(path.name)
    if match is None:
        raise MergeError(f"{path} is a pairs table but not named as a shard's (x.shard-00000-of-00004.parquet); give "
                         "the attempts shards (x.attempts.shard-*.parquet)")
    attempts = path.with_name(f"{match['stem']}.attempts.shard-{match['rank']}-of-{match['world']}{match['suffix']}")
    if not attempts.exists():
        raise MergeError(f"{path} is a pair stage's pairs shard, but its attempts shard {attempts} (what a merge "
                         "joins) is not there")
    return attempts


def read_shard(path: str | os.PathLike) -> Shard:
    """A shard table (a pair stage's pairs shard stands for its attempts shard); refused unless finished."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("kind") == "pairs":
        path = _attempts_shard(path)
        meta = read_metadata(path)
    stamp = read_stamp(path)
    if not stamp or not isinstance(stamp.get("shard"), dict):
        raise MergeError(f"{path} is not a finished shard of a stepdata stage run (its table records no shard: "
                         "an unsharded run's output, one written by an older stepdata, or not a stage's table)")
    summary_path = path.with_name(path.name + ".summary.json")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = None
    shard = Shard(path, str(meta.get("kind")), {k: v for k, v in (meta.get("config") or {}).items() if k != "shard"},
                  stamp, summary or {})
    if not isinstance(summary, dict) or summary.get("run_fingerprint") != stamp.get("parts"):
        raise MergeError(f"{shard} is not finished: {summary_path} is missing or from another run of that rank; "
                         f"run rank {shard.rank} again (the same command resumes) and merge then")
    return shard


def find_shards(out: str | os.PathLike) -> list[Path]:
    """The shard tables of ``out`` by name (a pair stage's attempts shards when ``out`` is its pairs table).

    Refuses when none is there, or when shards of more than one world size lie there
    (a stale run's: a merge must not guess which run is meant).
    """
    out = Path(out)
    bases = [out] if ".attempts." in out.name else [attempts_path_for(out), out]
    for base in bases:
        pattern = f"{glob.escape(base.stem)}.shard-*-of-*{glob.escape(base.suffix)}"
        found = sorted(p for p in base.parent.glob(pattern)
                       if (m := SHARD_NAME.match(p.name)) and m["stem"] == base.stem)
        if found:
            break
    else:
        raise MergeError(f"no shard tables of {out} found ({out.stem}.shard-*-of-*{out.suffix}); run the ranks first, "
                         "or give the shard tables to merge")
    sizes: dict[int, list[str]] = {}
    for path in found:
        sizes.setdefault(int(SHARD_NAME.match(path.name)["world"]), []).append(path.name)  # type: ignore[index]
    if len(sizes) > 1:
        listed = "; ".join(f"world size {n}: {', '.join(names)}" for n, names in sorted(sizes.items()))
        raise MergeError(f"shards of different world sizes lie beside {out} ({listed}); remove the stale ones or "
                         "give the shard tables to merge")
    return found


def _check_same_run(shards: list[Shard]) -> None:
    """Refuse shards of different stages, world sizes, configs or inputs, and missing or doubled ranks."""
    first = shards[0]
    if len({(s.kind, s.stage) for s in shards}) > 1:
        raise MergeError("shards of different stages: " + "; ".join(f"{s} is {s.stage} ({s.kind})" for s in shards))
    if len({s.world_size for s in shards}) > 1:
        raise MergeError("shards of different world sizes: " + "; ".join(map(str, shards))
                         + "; merge the shards of one run")
    ranks = Counter(s.rank for s in shards)
    doubled = sorted(r for r, n in ranks.items() if n > 1)
    if doubled:
        paths = ", ".join(str(s.path) for s in shards if s.rank in doubled)
        raise MergeError(f"rank(s) {', '.join(map(str, doubled))} given more than once ({paths}); give each rank once")
    missing = sorted(set(range(first.world_size)) - set(ranks))
    if missing:
        where = ", ".join(str(shard_path(_unsharded(first.path), r, first.world_size)) for r in missing)
        raise MergeError(f"missing rank(s) {', '.join(map(str, missing))} of {first.world_size} (expected {where}); "
                         f"run them (--rank R --world-size {first.world_size}) and merge again")
    for shard in shards[1:]:
        if shard.stamp.get("config_hash") != first.stamp.get("config_hash"):
            changes = "; ".join(config_diff(first.config, shard.config)) or "a redacted or unrecorded setting"
            raise MergeError(f"{shard} was made with another config than {first}: {changes}")
        if shard.record.get("input_fingerprint") != first.record.get("input_fingerprint"):
            raise MergeError(f"{shard} was made from another input than {first} ({shard.record.get('units')} vs "
                             f"{first.record.get('units')} units, fingerprint {shard.record.get('input_fingerprint')} "
                             f"vs {first.record.get('input_fingerprint')})")


def _unsharded(path: Path) -> Path:
    match = SHARD_NAME.match(path.name)
    return path if match is None else path.with_name(match["stem"] + match["suffix"])


def _unit_order(shards: list[Shard]) -> dict[str, int]:
    """unit id -> position in the whole input; refuses a unit in two shards or units that are not the input."""
    first = shards[0].record
    where: dict[str, Shard] = {}
    by_position: dict[int, tuple[str, str]] = {}
    for shard in shards:
        record = shard.record
        for position, unit, digest in zip(record["positions"], record["unit_ids"], record["unit_hashes"]):
            if unit in where or position in by_position:
                other = where.get(unit) or next(s for s in shards if position in s.record["positions"])
                raise MergeError(f"unit {unit!r} (position {position}) is in {other} and in {shard}")
            where[unit] = shard
            by_position[position] = (unit, digest)
    total = int(first["units"])
    if sorted(by_position) != list(range(total)):
        gaps = sorted(set(range(total)) - set(by_position))[:3]
        raise MergeError(f"the shards hold {len(by_position)} of the input's {total} units (e.g. missing position(s) "
                         f"{gaps}); merge all the shards of one run")
    units = [by_position[p] for p in range(total)]
    if _units_fingerprint([u for u, _ in units], [h for _, h in units]) != first["input_fingerprint"]:
        raise MergeError("the shards' units do not make up the input they record (fingerprint differs); were shard "
                         "tables edited?")
    return {unit: position for position, (unit, _) in enumerate(units)}


def _rows_in_input_order(shards: list[Shard], order: dict[str, int]) -> pd.DataFrame:
    """Every shard's rows, sorted by their unit's position in the input (a unit's rows keep their order)."""
    frames = []
    for shard in shards:
        rows = read_table(shard.path, kind=shard.kind)
        keys = rows[shard.record["key_column"]].astype(str)
        mine = set(shard.record["unit_ids"])
        stray = keys[~keys.isin(mine)]
        if len(stray):
            raise MergeError(f"{shard}: row {int(stray.index[0])} has {shard.record['key_column']} {stray.iloc[0]!r}, "
                             "not one of the units the shard records")
        frames.append(rows)
    merged = pd.concat(frames, ignore_index=True)
    position = merged[shards[0].record["key_column"]].astype(str).map(order)
    return merged.iloc[position.argsort(kind="stable")].reset_index(drop=True)


def _summary(run: StageRun, shards: list[Shard], output: pd.DataFrame, stats: dict[str, Any]) -> RunSummary:
    """The merged run's summary: counts over the merged output, the shards' batches and time added up."""
    def total(key: str) -> Any:
        return sum(s.summary.get(key) or 0 for s in shards)

    errors = output["error"].dropna()
    return RunSummary(
        run.stage, str(run.final), f"merged from {len(shards)} shards", run.hash, units=int(shards[0].record["units"]),
        rows=len(output), error_rows=len(errors),
        errors_by_kind={k: int(v) for k, v in errors.map(_error_kind).value_counts().items()},
        batches_total=total("batches_total"), batches_run=total("batches_run"),
        batches_skipped=total("batches_skipped"), rows_retried=total("rows_retried"),
        units_reused=total("units_reused"), seconds=round(total("seconds"), 2),
        input_fingerprint=shards[0].record["input_fingerprint"], run_fingerprint=run.stamp["parts"],
        stage_stats=stats)


def merge_shards(paths: list[str | os.PathLike], out: str | os.PathLike) -> MergeResult:
    """Join the shards of one stage run into what the unsharded run writes at ``out`` (see the module doc).

    ``paths``: the shard tables (for a pair stage its attempts or its pairs shards, in any
    order); ``out``: the output as given to the stage (a pair stage's pairs table, its
    attempts going to ``OUT.attempts.parquet``). Raises :class:`MergeError` naming the
    ranks when the shards do not make up exactly one run's input.
    """
    from stepdata.pipeline.stages import STAGES

    if not paths:
        raise MergeError("nothing to merge: give the shard tables, or --out alone to find them by name")
    shards = sorted((read_shard(p) for p in paths), key=lambda s: s.rank)
    _check_same_run(shards)
    first = shards[0]
    if first.stage not in STAGES:
        raise MergeError(f"{first}: unknown stage {first.stage!r}; known: {sorted(STAGES)}")
    block = STAGES[first.stage].from_recorded(first.config)
    out = Path(out)
    if first.kind == "attempts" and ".attempts." in out.name:
        out = out.with_name(out.name.replace(".attempts", "", 1))  # the pairs path, as the stage is given it
    run = StageRun(first.stage, block.output_path(out), first.kind, first.config,
                   key_column=first.record["key_column"], batch_size=int(first.config.get("batch_size", 64)),
                   progress=False)
    if run.hash != first.stamp["config_hash"]:
        raise MergeError(f"{first}: its recorded config does not give its config hash (was the table edited?)")
    output = _rows_in_input_order(shards, _unit_order(shards))
    parts = _digest("\n".join(f"{s.rank}:{s.stamp['parts']}" for s in shards))
    run.stamp = {"config_hash": run.hash, "input_fingerprint": first.record["input_fingerprint"], "parts": parts,
                 "merged": {"world_size": first.world_size, "units": int(first.record["units"])}}
    left_out = (first.summary.get("stage_stats") or {}).get("left_out")  # made before the split: the same in each
    stats = block.stats(output) | ({"left_out": left_out} if left_out else {})
    run.summary = _summary(run, shards, output, stats)
    with run.locked():
        config = first.config | {"shard": f"merged {first.world_size}", "merged_from": [str(s.path) for s in shards]}
        run.write_output(output, run.final, first.kind, config)
        write_text_atomic(run.final.with_name(run.final.name + ".summary.json"),
                          json.dumps(scrub_object(run.summary.as_dict()), indent=1, default=str))
        result, _ = block.finalize(run, output)  # a pair stage: pairs flattened and capped over the whole
    pairs_path = block.extra_outputs(run)
    return MergeResult(output, run.final, run.summary.as_dict(), [s.path for s in shards],
                       pairs=result if pairs_path else None, pairs_path=pairs_path[0] if pairs_path else None)

