"""Reading and writing stepdata tables as Parquet, validated against the schemas.

The files are plain Parquet: ``pandas.read_parquet`` and
``datasets.load_dataset("parquet", ...)`` read them unchanged. What we add lives
in the file's key-value metadata under the key ``stepdata``: the table kind, the
schema version and the run's config, so a file found on disk months later still
says what made it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stepdata import __version__
from stepdata.schema import (
    ALLOWED_VALUES,
    SCHEMA_VERSION,
    schema_for,
    status_of_error_step,
)

METADATA_KEY = b"stepdata"

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|authorization)", re.IGNORECASE)


class SchemaError(ValueError):
    """A table does not match its schema; the message names the column (and row)."""


def redact_secrets(config: Any) -> Any:
    """Return ``config`` with values under secret-looking keys replaced.

    Run configs are stored in every output file; an API key passed on the command
    line must never end up there.
    """
    if isinstance(config, Mapping):
        return {
            k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v is not None else redact_secrets(v))
            for k, v in config.items()
        }
    if isinstance(config, (list, tuple)):
        return [redact_secrets(v) for v in config]
    return config


class NoSpaceLeft(OSError):
    """A write failed because the file system is full (or the quota is used up); names the file."""

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        code = cause.errno if cause.errno in (errno.ENOSPC, errno.EDQUOT) else errno.ENOSPC
        super().__init__(code, os.strerror(code), str(path))

    def __str__(self) -> str:
        return f"{self.strerror.lower()} while writing {self.filename}"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: errno ENOSPC/EDQUOT, or pyarrow's message for it."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed onto ``path``.

    The rename (``os.replace``) is atomic on one file system, so ``path`` holds
    either its old content or the complete new one, never a half-written file,
    even when the process is killed mid-write. If the ``with`` block raises, the
    temporary file is removed, ``path`` is left as it was, and the error propagates.
    The folder of ``path`` is created if needed. The temporary name is hidden
    (``.NAME.PID.RANDOM.tmp``) and unique, so concurrent writers never share one.
    A full disk raises :class:`NoSpaceLeft` naming ``path`` (the old content stays).

        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, NoSpaceLeft):
            raise NoSpaceLeft(path, exc) from exc
        raise


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def _first_bad_row(values: list[Any], field: pa.Field) -> tuple[int, Any, str]:
    """Find the first value that pyarrow cannot convert to ``field.type``."""
    for i, value in enumerate(values):
        try:
            pa.array([value], type=field.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            return i, value, str(exc)
    return -1, None, ""


def _column_to_arrow(df: pd.DataFrame, field: pa.Field, kind: str) -> pa.Array:
    series = df[field.name]
    values = series.tolist()
    if pa.types.is_list(field.type):
        # pyarrow would read a string as a list of its characters: refuse it instead.
        for row, value in enumerate(values):
            if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
                raise SchemaError(
                    f"{kind} table: column {field.name!r} must be a list; row {row} holds "
                    f"{type(value).__name__} {str(value)[:80]!r}"
                )
    try:
        array = pa.array(values, type=field.type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        row, value, why = _first_bad_row(values, field)
        raise SchemaError(
            f"{kind} table: column {field.name!r} must be {field.type}; "
            f"row {row} holds {type(value).__name__} {str(value)[:80]!r} ({why})"
        ) from None
    if not field.nullable and array.null_count:
        row = next(i for i, v in enumerate(array.to_pylist()) if v is None)
        raise SchemaError(f"{kind} table: column {field.name!r} may not be null; row {row} is null")
    allowed = ALLOWED_VALUES.get((kind, field.name))
    if allowed:
        for row, value in enumerate(array.to_pylist()):
            if value is not None and value not in allowed:
                raise SchemaError(
                    f"{kind} table: column {field.name!r} row {row} is {value!r}; expected one of {list(allowed)}"
                )
    return array


def to_arrow(df: pd.DataFrame, kind: str, config: Mapping[str, Any] | None = None) -> pa.Table:
    """Validate ``df`` against the schema of ``kind`` and convert it to an Arrow table.

    Raises SchemaError naming the missing, unknown or mistyped column (and the
    first offending row), so a broken stage fails before it writes anything.
    """
    schema = schema_for(kind)
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise SchemaError(f"{kind} table is missing column(s) {missing}")
    unknown = [c for c in df.columns if c not in schema.names]
    if unknown:
        raise SchemaError(f"{kind} table has unknown column(s) {unknown}; known: {schema.names}")
    df = df.reset_index(drop=True)
    arrays = [_column_to_arrow(df, field, kind) for field in schema]
    metadata = {
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "stepdata_version": __version__,
        "config": redact_secrets(dict(config or {})),
    }
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(
    df: pd.DataFrame, path: str | os.PathLike, kind: str, config: Mapping[str, Any] | None = None
) -> Path:
    """Validate ``df`` as a ``kind`` table and write it to ``path`` atomically.

    The file appears only once it is complete (written beside, then renamed), so
    a run killed mid-write never leaves a truncated table that looks finished.
    """
    table = to_arrow(df, kind, config)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the stepdata metadata of a Parquet file ({} for foreign files)."""
    raw = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in raw:
        return {}
    return json.loads(raw[METADATA_KEY])


def read_table(path: str | os.PathLike, kind: str | None = None) -> pd.DataFrame:
    """Read a stepdata table into a plain pandas DataFrame.

    List columns come back as Python lists (not numpy arrays) so rows are easy to
    inspect in a notebook. The file's metadata is in ``df.attrs["stepdata"]``. If
    ``kind`` is given, the file must be that kind of table.
    """
    meta = read_metadata(path)
    names = pq.read_schema(path).names
    # localized tables written before the status column: derive it from error_step
    derive_status = (kind or meta.get("kind")) == "localized" and "status" not in names and "error_step" in names
    if kind is not None:
        found = meta.get("kind")
        if found is not None and found != kind:
            raise SchemaError(f"{path}: expected a {kind} table, found a {found} table")
        missing = [n for n in schema_for(kind).names if n not in names and not (derive_status and n == "status")]
        if missing:
            raise SchemaError(f"{path}: {kind} table is missing column(s) {missing}")
    table = pq.read_table(path)
    df = table.to_pandas()
    if derive_status:
        df.insert(df.columns.get_loc("error_step") + 1, "status", [status_of_error_step(v) for v in df["error_step"]])
    for field in table.schema:
        if pa.types.is_list(field.type):
            df[field.name] = [None if v is None else list(v) for v in df[field.name]]
    df.attrs["stepdata"] = meta
    return df
