"""Several stages' pairs tables as one training set.

Rectify (Step-DPO pairs) and synthesize (SCDPO and DPO pairs) each write their own
pairs table, with their own config in its metadata. ``stepdata merge`` joins the
shards of *one* stage and so refuses tables made with different configs; joining
stages is a different act, and this module does it: the rows are concatenated in
the order given, every source is recorded (path, rows, its stage and config) in
the output's metadata so a trained model can be traced back to the stages that
made its data, and a pair id seen twice is refused, since it means the same pairs
were given twice and would be counted (and trained on) twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.io import write_table
from stepdata.pairs.export import read_pairs

REPEATS_SHOWN = 5


class CombineError(ValueError):
    """The inputs cannot be combined; the message names the files and pair ids."""


def _source_record(path: str | os.PathLike, df: pd.DataFrame) -> dict[str, Any]:
    meta = df.attrs.get("stepdata", {})
    config = meta.get("config", {})
    return {"path": str(path), "rows": len(df), "stage": config.get("stage") or config.get("command"),
            "kinds": {str(k): int(v) for k, v in df["kind"].value_counts().items()}, "config": config}


def combine_pairs(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Concatenate pairs tables (or pairs exports) and, with ``out``, write them as one pairs table.

    Raises CombineError when an id repeats (within a file or across files), naming
    the first few with the files and rows they are in; a file that is not pairs rows
    fails with :func:`stepdata.pairs.export.read_pairs`'s error naming it. A pair id
    covers the whole pair and is unique in every pairs table a stage writes, so a
    repeat means the same pairs were given twice.
    """
    if not paths:
        raise CombineError("nothing to combine: give one or more pairs tables")
    if out is not None and Path(out).suffix.lower() != ".parquet":
        raise CombineError(f"{out}: combine writes a Parquet pairs table; name it .parquet "
                           "(`stepdata export` writes JSON lines and the trainers' layouts from it)")
    frames = [read_pairs(path) for path in paths]
    where: dict[str, list[str]] = {}
    for path, df in zip(paths, frames):
        for row, pair_id in enumerate(df["pair_id"]):
            where.setdefault(str(pair_id), []).append(f"{path} row {row}")
    repeated = {pair_id: places for pair_id, places in where.items() if len(places) > 1}
    if repeated:
        shown = "; ".join(f"{pair_id!r} in {', '.join(places)}" for pair_id, places in
                          list(repeated.items())[:REPEATS_SHOWN])
        more = f" (and {len(repeated) - REPEATS_SHOWN} more)" if len(repeated) > REPEATS_SHOWN else ""
        raise CombineError(f"{len(repeated)} pair id(s) appear more than once: {shown}{more}. Was a table given "
                           "twice, or combined with a table it was already combined into?")
    combined = pd.concat(frames, ignore_index=True)
    sources = [_source_record(path, df) for path, df in zip(paths, frames)]
    combined.attrs["stepdata"] = {"kind": "pairs", "config": {"command": "combine", "sources": sources}}
    if out is not None:
        write_table(combined, out, "pairs", config={"command": "combine", "sources": sources})
    return combined
