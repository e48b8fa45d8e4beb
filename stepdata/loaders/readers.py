"""Reading records from JSONL, JSON, CSV, Parquet and (ASDiv's) XML files, each with its location.

A record's location (file and line, or item/row number) travels with it so a
bad record can be reported precisely, whichever format it came from.

Text files are read as UTF-8 with an optional byte-order mark (Excel writes one at
the start of a CSV). Bytes that are not UTF-8 do not stop the whole file with a
decoder error that names no row: they are kept as escapes (``surrogateescape``) and
:func:`undecodable_field` finds them, with JSON's ``\\ud800``-style lone surrogates,
in the record they belong to, so the loader names its line and column (or skips it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where a record came from, in the words a person uses to find it."""

    file: str
    line: int | None = None  # 1-based line (JSONL, CSV)
    item: int | None = None  # 0-based item/row (JSON arrays, Parquet)

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}, line {self.line}"
        if self.item is not None:
            return f"{self.file}, item {self.item}"
        return self.file


class BadRowError(ValueError):
    """A record that cannot become a row; names the file, the line and the field."""

    def __init__(self, location: Location, field: str | None, message: str):
        self.location = location
        self.field = field
        self.message = message
        where = f"{location}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")

    def as_record(self) -> dict[str, Any]:
        """The error as a row of a bad-rows report."""
        return {
            "file": self.location.file,
            "line": self.location.line,
            "item": self.location.item,
            "field": self.field,
            "error": self.message,
        }


Record = tuple[Location, Any]

# UTF-8 with or without a byte-order mark; undecodable bytes kept as lone surrogates U+DC80-U+DCFF.
TEXT = {"encoding": "utf-8-sig", "errors": "surrogateescape"}


def _surrogate(text: str) -> tuple[int, str] | None:
    """The first lone surrogate in ``text`` (an undecodable byte or a JSON escape), as (position, description)."""
    for position, char in enumerate(text):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            if 0xDC80 <= code <= 0xDCFF:
                return position, f"not valid UTF-8 text (undecodable byte 0x{code - 0xDC00:02X} at character {position})"
            return position, f"not valid Unicode text (a lone surrogate U+{code:04X} at character {position})"
    return None


def _first_bad_text(value: Any) -> str | None:
    if isinstance(value, str):
        found = _surrogate(value)
        return None if found is None else found[1]
    if isinstance(value, dict):
        for key, item in value.items():
            why = _first_bad_text(key) or _first_bad_text(item)
            if why:
                return why
    if isinstance(value, (list, tuple)):
        for item in value:
            why = _first_bad_text(item)
            if why:
                return why
    return None


def undecodable_field(record: Any) -> tuple[str | None, str] | None:
    """(field, why) for the first field of ``record`` whose text cannot be stored (bytes that are not UTF-8,
    a lone surrogate); None when all of it can. A field name that is itself undecodable is reported as such."""
    if not isinstance(record, dict):
        why = _first_bad_text(record)
        return None if why is None else (None, why)
    for key, value in record.items():
        key_problem = _first_bad_text(key)
        if key_problem:
            return None, f"a column name is {key_problem}"
        why = _first_bad_text(value)
        if why:
            return str(key), why
    return None


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open(**TEXT) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = Location(str(path), line=number)
            try:
                yield location, json.loads(line)
            except json.JSONDecodeError as exc:
                yield location, BadRowError(location, None, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _json(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(**TEXT))
    except json.JSONDecodeError as exc:
        raise BadRowError(Location(str(path), line=exc.lineno), None, f"invalid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"id": {...}, ...}
        items = data.get("data") if isinstance(data.get("data"), list) else list(data.values())
    elif isinstance(data, list):
        items = data
    else:
        raise BadRowError(Location(str(path)), None, "expected a JSON array of records")
    for index, item in enumerate(items):
        yield Location(str(path), item=index), item


def _csv(path: Path) -> Iterator[Record]:
    with path.open(newline="", **TEXT) as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield Location(str(path), line=reader.line_num), row


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for index, row in enumerate(table.to_pylist()):
        yield Location(str(path), item=index), row


def _xml(path: Path) -> Iterator[Record]:
    """An XML file in ASDiv's layout: every ``<Problem>`` element is a record, its attributes and the text of its
    child elements the fields (``{"ID": ..., "Body": ..., "Answer": ...}``); item i is the i-th problem."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise BadRowError(Location(str(path), line=line), None, f"invalid XML ({exc})") from None
    found = False
    for index, element in enumerate(root.iter("Problem")):
        found = True
        record: dict[str, Any] = dict(element.attrib)
        for child in element:
            record[child.tag] = child.text if child.text is not None else ""
        yield Location(str(path), item=index), record
    if not found:
        raise BadRowError(Location(str(path)), None, "no <Problem> elements (an XML file is read in ASDiv's layout)")


READERS = {".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet, ".xml": _xml}


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield (location, record) pairs; a record that failed to parse is a BadRowError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected one of {sorted(READERS)}")
    if path.suffix.lower() == ".json":
        # A .json file may hold JSON lines; tell by its first character.
        with path.open(**TEXT) as handle:
            head = handle.read(4096).lstrip()
        if head.startswith("{") and "\n{" in head:
            reader = _jsonl
    return reader(path)
