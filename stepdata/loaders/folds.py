"""A named subset of a data set given as lists of record ids: ASDiv-A, the arithmetic part of ASDiv.

ASDiv ships the ids of its arithmetic subset (1,218 problems) in five fold files beside
``ASDiv.xml`` (``folds-asdiv-a/fold0.txt`` .. ``fold4.txt``, one id a line). The subset is
read from the whole file in its order, each problem marked with its fold; an id a fold
lists that the file does not have is an error naming the fold file and line, never a
silently smaller set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepdata.loaders.readers import BadRowError, Location

ASDIV_A_FOLDS = "folds-asdiv-a"


def read_folds(folder: Path) -> dict[str, tuple[int, Location]]:
    """id -> (fold, where it is listed) from ``folder/fold<k>.txt``; an id listed twice is an error."""
    files = sorted(folder.glob("fold*.txt"), key=lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0))
    if not files:
        raise FileNotFoundError(f"no fold files (fold0.txt, ...) in {folder}")
    listed: dict[str, tuple[int, Location]] = {}
    for fold, path in enumerate(files):
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            record_id = line.strip()
            if not record_id:
                continue
            where = Location(str(path), line=number)
            if record_id in listed:
                raise BadRowError(where, None, f"id {record_id!r} is listed again (first at {listed[record_id][1]})")
            listed[record_id] = (fold, where)
    return listed


def fold_subset(data_file: Path, records: Iterator[tuple[Location, Any]],
                folder: str = ASDIV_A_FOLDS) -> Iterator[tuple[Location, Any]]:
    """The records of ``data_file`` whose ``ID`` a fold file beside it lists, each with its ``fold``; at the end,
    an error naming the first listed id the file does not have."""
    listed = read_folds(data_file.parent / folder)
    seen: set[str] = set()
    for location, record in records:
        if isinstance(record, dict) and "ID" in record:
            record_id = str(record["ID"])
            if record_id not in listed:
                continue
            seen.add(record_id)
            yield location, {**record, "fold": listed[record_id][0]}
        else:
            yield location, record  # a record without an id: the loader reports it
    missing = [i for i in listed if i not in seen]
    if missing:
        raise BadRowError(listed[missing[0]][1], None, f"id {missing[0]!r} is not in {data_file} "
                                                       f"({len(missing)} listed ids are missing)")
