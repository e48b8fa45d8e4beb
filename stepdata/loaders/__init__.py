"""Loading problem sets into the problems table.

``load_problems`` takes a file (JSONL, JSON, CSV, Parquet) or a name:

- ``embedded`` / ``embedded:N``: our own generated arithmetic word problems
  (no files needed; see :mod:`stepdata.embedded`);
- ``gsm8k``, ``gsm8k:train``, ``math500``, ``svamp``, ``multiarith``, ``asdiv``,
  ``asdiv-a`` (ASDiv's arithmetic subset, from its fold files) and
  ``processbench:<subset>`` (gsm8k, math, olympiadbench, omnimath): the standard
  sets, read from a data directory (``data_dir=`` or ``$STEPDATA_DATA_DIR``),
  never downloaded.

Bad records raise :class:`BadRowError` naming the file, line and field, or with
``skip_bad_rows=True`` are listed in ``df.attrs["bad_rows"]`` (and logged) while
the good rows load. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.loaders.folds import fold_subset
from stepdata.loaders.formats import FORMATS, detect_format
from stepdata.loaders.readers import (
    BadRowError,
    Location,
    iter_records,
    undecodable_field,
)
from stepdata.schema import PROBLEMS

log = logging.getLogger(__name__)

# ProcessBench's four subsets, in the order its paper reports them (one file each: processbench/<subset>.json)
PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")

# name -> (path under the data directory, format, source label)
KNOWN_SETS: dict[str, tuple[str, str, str]] = {
    "gsm8k": ("gsm8k/test.jsonl", "gsm8k", "gsm8k-test"),
    "gsm8k:test": ("gsm8k/test.jsonl", "gsm8k", "gsm8k-test"),
    "gsm8k:train": ("gsm8k/train.jsonl", "gsm8k", "gsm8k-train"),
    "math500": ("math500/test.jsonl", "math", "math500"),
    "svamp": ("svamp/SVAMP.json", "svamp", "svamp"),
    "multiarith": ("multiarith/MultiArith.json", "multiarith", "multiarith"),
    "asdiv": ("asdiv/ASDiv.xml", "asdiv", "asdiv"),
    "asdiv-a": ("asdiv/ASDiv.xml", "asdiv", "asdiv-a"),  # the arithmetic subset: ids in asdiv/folds-asdiv-a/
    **{f"processbench:{subset}": (f"processbench/{subset}.json", "processbench", f"processbench-{subset}")
       for subset in PROCESSBENCH_SUBSETS},
}

# a known set that is part of its file: name -> the filter that keeps its records
SUBSETS = {"asdiv-a": fold_subset}

__all__ = ["KNOWN_SETS", "PROCESSBENCH_SUBSETS", "BadRowError", "Location", "load_problems", "problem_id_for", "resolve_dataset"]


def problem_id_for(question: str) -> str:
    """A stable id for a problem that has none: a hash of its question text."""
    return hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:16]


def resolve_dataset(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Path, str, str]:
    """Map a known set's name to (file, format, source); explain where to put it if missing."""
    if name not in KNOWN_SETS:
        raise ValueError(f"unknown data set {name!r}; known names: {sorted(KNOWN_SETS)} (or pass a file path)")
    relative, fmt, source = KNOWN_SETS[name]
    root = data_dir or os.environ.get("STEPDATA_DATA_DIR")
    if not root:
        raise FileNotFoundError(
            f"data set {name!r} is read from a data directory: pass data_dir= (--data-dir) or set "
            f"STEPDATA_DATA_DIR to a folder holding {relative}"
        )
    path = Path(root) / relative
    if not path.exists():
        raise FileNotFoundError(f"data set {name!r}: {path} does not exist (expected {relative} under {root})")
    return path, fmt, source


def _finish_ids(rows: list[dict[str, Any]]) -> None:
    """Give every row a unique id: its own, or a question hash (suffixed when repeated)."""
    seen: dict[str, int] = {}
    for row in rows:
        given = row.get("problem_id")
        base = str(given) if given not in (None, "") else problem_id_for(row["question"])
        count = seen.get(base, 0) + 1
        seen[base] = count
        if count > 1:
            meta = json.loads(row["meta"]) if row.get("meta") else {}
            meta["duplicate_of"] = base
            row["meta"] = json.dumps(meta, ensure_ascii=False)
            base = f"{base}-{count}"
        row["problem_id"] = base


def _refuse_other_tables(path: Path) -> None:
    """A stepdata table of another kind (pairs, rollouts, an export) is not a problem set, though it has
    question and answer columns: taken for one, a stage would run on nothing or on the wrong rows."""
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return
    from stepdata.io import read_metadata

    kind = read_metadata(path).get("kind")
    if kind not in (None, "problems"):
        raise ValueError(f"{path} is a {kind} table, not a problems table; give the problems table, data set "
                         "file or data set name the problems come from")


def load_problems(
    path_or_name: str | os.PathLike,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    source: str | None = None,
    skip_bad_rows: bool = False,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Load a problem set as a problems table (a plain DataFrame).

    ``format`` is one of gsm8k, math, svamp, multiarith, processbench, asdiv, generic
    (detected from the first record when omitted). ``columns`` maps our column
    names to the file's (``{"question": "q", "answer": "a"}``).
    """
    name = str(path_or_name)
    if name == "embedded" or name.startswith("embedded:"):
        from stepdata.embedded import make_problems

        count = int(name.split(":", 1)[1]) if ":" in name else (limit or 100)
        return make_problems(min(count, limit) if limit else count, seed=seed)
    if name in KNOWN_SETS:
        path, known_format, known_source = resolve_dataset(name, data_dir)
        format = format or known_format
        source = source or known_source
    else:
        path = Path(name)
        source = source or path.stem
        _refuse_other_tables(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")

    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    converter = FORMATS[format] if format else None
    records = iter_records(path)
    if name in SUBSETS:
        records = SUBSETS[name](path, records)
    for location, record in records:
        if limit is not None and len(rows) >= limit:
            break
        try:
            if isinstance(record, BadRowError):
                raise record
            if not isinstance(record, Mapping):
                raise BadRowError(location, None, f"expected an object, found {type(record).__name__}")
            bad_text = undecodable_field(record)
            if bad_text is not None:
                raise BadRowError(location, *bad_text)
            if converter is None:
                detected = detect_format(record)
                converter = FORMATS[detected]
                log.info("%s: detected format %s", path, detected)
            row = converter(record, location, columns or {})
        except BadRowError as exc:
            if not skip_bad_rows:
                raise
            bad.append(exc.as_record())
            continue
        row.setdefault("problem_id", None)
        row.setdefault("meta", None)
        row["source"] = source
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        meta["origin"] = str(location)
        row["meta"] = json.dumps(meta, ensure_ascii=False)
        rows.append(row)
    _finish_ids(rows)
    if bad:
        log.warning("%s: skipped %d bad row(s); see df.attrs['bad_rows']", path, len(bad))
    df = pd.DataFrame(rows, columns=PROBLEMS.names)
    df.attrs["bad_rows"] = bad
    return df
