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
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stepdata import __version__
from stepdata.schema import (
    ADDED_COLUMNS,
    ALLOWED_VALUES,
    OPTIONAL_COLUMNS,
    SCHEMA_VERSION,
    UNIQUE_COLUMNS,
    schema_for,
    status_of_error_step,
)
from stepdata.secrets import redact_secrets, scrub_failed_rows

METADATA_KEY = b"stepdata"


class SchemaError(ValueError):
    """A table does not match its schema; the message names the column (and row)."""


class UnreadableTable(SchemaError, OSError):
    """A file that is not a readable Parquet file (cut short, a broken footer, not Parquet at all).

    Both a SchemaError (a ValueError) and an OSError, as pyarrow's own errors for such files were.
    """


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


def _is_text_list(field: pa.Field) -> bool:
    return pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type)


def _null_item(value: Any) -> int | None:
    """Where a list cell holds a null item (None, or pandas' NaN), None when it holds none."""
    if value is None:
        return None
    for index, item in enumerate(value):
        if item is None or (isinstance(item, float) and np.isnan(item)):
            return index
    return None


def _column_to_arrow(df: pd.DataFrame, field: pa.Field, kind: str, rows: Any = None) -> pa.Array:
    """One column of ``df`` as ``field`` says; a SchemaError names the column and the row.

    ``rows`` are the names rows are reported by (default: their positions); a table read from
    a file reports its rows by their place in the file, a filtered one by the input row.
    """
    series = df[field.name]
    values = series.tolist()
    label = (lambda i: i) if rows is None else (lambda i: rows[i])
    if pa.types.is_list(field.type):
        # pyarrow would read a string as a list of its characters: refuse it instead.
        for row, value in enumerate(values):
            if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
                raise SchemaError(
                    f"{kind} table: column {field.name!r} must be a list; row {label(row)} holds "
                    f"{type(value).__name__} {str(value)[:80]!r}"
                )
    try:
        array = pa.array(values, type=field.type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        row, value, why = _first_bad_row(values, field)
        raise SchemaError(
            f"{kind} table: column {field.name!r} must be {field.type}; "
            f"row {label(row)} holds {type(value).__name__} {str(value)[:80]!r} ({why})"
        ) from None
    if not field.nullable and array.null_count:
        row = next(i for i, v in enumerate(array.to_pylist()) if v is None)
        raise SchemaError(f"{kind} table: column {field.name!r} may not be null; row {label(row)} is null")
    if _is_text_list(field):
        for row, value in enumerate(values):
            item = _null_item(value)
            if item is not None:
                raise SchemaError(f"{kind} table: column {field.name!r} row {label(row)}: item {item} is null "
                                  "(every item must be text)")
    allowed = ALLOWED_VALUES.get((kind, field.name))
    if allowed:
        for row, value in enumerate(array.to_pylist()):
            if value is not None and value not in allowed:
                raise SchemaError(
                    f"{kind} table: column {field.name!r} row {label(row)} is {value!r}; expected one of {list(allowed)}"
                )
    return array


def _holds_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
        pa.types.is_list(kind) and _holds_text(kind.value_type))


def _check_unique(df: pd.DataFrame, kind: str, rows: Any) -> None:
    """A column that names rows (a pair id) must not repeat; the error names the value and its rows."""
    column = UNIQUE_COLUMNS.get(kind)
    if column is None or column not in df.columns:
        return
    repeated = df[column][df[column].duplicated(keep=False) & df[column].notna()]
    if repeated.empty:
        return
    value = repeated.iloc[0]
    where = [rows[i] for i in np.flatnonzero(df[column].eq(value).to_numpy())]
    listed = ", ".join(str(r) for r in where[:-1]) + f" and {where[-1]}"
    more = repeated.nunique() - 1
    raise SchemaError(f"{kind} table: {column} {value!r} is in rows {listed}" +
                      (f" (and {more} more {column}s repeat)" if more else "") +
                      f"; a {column} is unique in a {kind} table")


def _row_names(df: pd.DataFrame) -> list[Any]:
    """How rows are reported: by their index when it holds row numbers (a filtered table keeps its
    input's), else by position."""
    if pd.api.types.is_integer_dtype(df.index.dtype):
        return list(df.index)
    return list(range(len(df)))


def to_arrow(df: pd.DataFrame, kind: str, config: Mapping[str, Any] | None = None, *,
             unique: bool = True) -> pa.Table:
    """Validate ``df`` against the schema of ``kind`` and convert it to an Arrow table.

    Raises SchemaError naming the missing, unknown or mistyped column (and the
    first offending row), so a broken stage fails before it writes anything; and,
    for a table whose rows are named by a column (a pairs table's ``pair_id``), the
    value that repeats and its rows. Rows are named by the index when it holds row
    numbers (a filtered table's are its input's), else by position. ``unique=False``
    is for rows of that schema that are not such a table (the rows an export dropped).
    The text cells of rows that carry an ``error`` are scrubbed of secrets, and the
    config's secrets are redacted (:mod:`stepdata.secrets`).
    """
    schema = schema_for(kind)
    optional = [name for name in OPTIONAL_COLUMNS.get(kind, ()) if name not in df.columns]
    if optional:  # filled with nulls (see OPTIONAL_COLUMNS)
        df = df.assign(**{name: pd.Series([None] * len(df), index=df.index, dtype=object) for name in optional})
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise SchemaError(f"{kind} table is missing column(s) {missing}")
    unknown = [c for c in df.columns if c not in schema.names]
    if unknown:
        raise SchemaError(f"{kind} table has unknown column(s) {unknown}; known: {schema.names}")
    rows = _row_names(df)
    # the last line of defence: no key a server echoed into an error reaches a file
    df = scrub_failed_rows(df.reset_index(drop=True), [f.name for f in schema if _holds_text(f.type)])
    arrays = [_column_to_arrow(df, field, kind, rows) for field in schema]
    if unique:
        _check_unique(df, kind, rows)
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
    """Return the stepdata metadata of a Parquet file ({} for foreign files).

    Raises SchemaError (a ValueError) naming the file when it is not a readable
    Parquet file or when its stepdata metadata is not a JSON object.
    """
    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:  # a file cut short, a broken footer, not Parquet at all
        raise UnreadableTable(f"{path}: not a readable Parquet file ({str(exc).strip()})") from None
    if METADATA_KEY not in raw:
        return {}
    try:
        meta = json.loads(raw[METADATA_KEY])
    except ValueError as exc:
        raise SchemaError(f"{path}: its stepdata metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise SchemaError(f"{path}: its stepdata metadata is not a JSON object (found {type(meta).__name__})")
    return meta


def validate_columns(table: pa.Table, kind: str, where: str | os.PathLike) -> None:
    """Check the columns of ``table`` that ``kind``'s schema knows, as a write would, before anything uses them.

    A table made elsewhere (or edited) is checked when it is read: a null where a value
    is required, a null step inside a list of steps, a value of another type or outside
    a column's allowed values is a SchemaError naming ``where`` (the file), the column
    and the row as it is in the file, not in some later batch. Columns of the right type
    with no nulls to refuse are checked without leaving Arrow.
    """
    schema = schema_for(kind)
    for field in schema:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name)
        suspect = (column.type != field.type or (not field.nullable and column.null_count > 0)
                   or (kind, field.name) in ALLOWED_VALUES)
        if not suspect and _is_text_list(field):
            suspect = pc.list_flatten(column).null_count > 0
        if not suspect:
            continue
        values = pd.DataFrame({field.name: column.to_pylist()})
        try:
            _column_to_arrow(values, field, kind)
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}") from None


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
    added = {k: v for k, v in ADDED_COLUMNS.get(kind or meta.get("kind"), {}).items() if k not in names}
    if kind is not None:
        found = meta.get("kind")
        if found is not None and found != kind:
            raise SchemaError(f"{path}: expected a {kind} table, found a {found} table")
        missing = [n for n in schema_for(kind).names
                   if n not in names and n not in added and not (derive_status and n == "status")]
        if missing:
            raise SchemaError(f"{path}: {kind} table is missing column(s) {missing}")
    table = pq.read_table(path)
    if kind is not None:
        validate_columns(table, kind, path)
    df = table.to_pandas()
    if derive_status:
        df.insert(df.columns.get_loc("error_step") + 1, "status", [status_of_error_step(v) for v in df["error_step"]])
    for name, value in added.items():  # a table written before these columns: what it did not record
        df[name] = [value] * len(df)
    for field in table.schema:
        if pa.types.is_list(field.type):
            df[field.name] = [None if v is None else list(v) for v in df[field.name]]
    df.attrs["stepdata"] = meta
    return df
