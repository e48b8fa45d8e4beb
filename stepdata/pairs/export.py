"""Writing a pairs table in the layouts trainers read.

Formats (:data:`EXPORT_FORMATS`):

- ``trl``: TRL's standard (non-conversational) preference format, columns
  ``prompt``, ``chosen``, ``rejected``. ``prompt`` is the exact text the model sees
  before the step: the model's chat template applied to ``prompt_messages``, with
  the assistant's partial answer and the prefix steps appended verbatim
  (:func:`stepdata.pairs.build.pair_prompt_text`, the code the generators use), so
  ``prompt + chosen`` is the rendered conversation continued by chosen.
- ``step-dpo``: the column layout of the released Step-DPO data
  (Math-Step-DPO-10K): ``dataset``, ``prompt``, ``initial_reason_steps``,
  ``chosen``, ``rejected``, ``full_chosen``, ``full_rejected``, ``answer``. There
  ``prompt`` is the bare question (Step-DPO's ``train.py`` wraps it in its own
  prompt template and appends ``initial_reason_steps``), ``initial_reason_steps``
  is the assistant's partial answer ("Let's think step by step.\\n...") plus the
  steps before the error, ``chosen``/``rejected`` are the step texts, and
  ``full_chosen``/``full_rejected`` are the continuations from that step to the end
  of the solution, as Step-DPO's data pipeline stores the corrected completion:
  ``initial_reason_steps + full_chosen`` is the whole solution
  (our ``chosen_full``). ``dataset`` is our ``source``.
- ``jsonl``: the pairs rows as JSON lines (``provenance`` as an object).
- ``parquet``: the pairs table itself (validated, with its metadata).

``trl`` and ``step-dpo`` are written as Parquet or JSON lines by the output's
suffix (``.parquet`` / ``.jsonl``); extra pairs columns (e.g. ``pair_id``,
``chosen_ends_solution``) can be carried along with ``extra_columns``.

End of sequence: no format puts an EOS token in the text. A step-level chosen or
rejected is usually *not* the end of the solution, and teaching the model to stop
after step k would be wrong. Our trainers append EOS only where
``chosen_ends_solution`` / ``rejected_ends_solution`` is true. Plain TRL
(``DPOTrainer`` on a non-conversational dataset, as this ``trl`` export is)
appends the tokenizer's EOS to every chosen and rejected; train step-level pairs
with it only knowingly, or carry the two flags (``extra_columns``) and handle EOS
in a custom collator. Whole-solution pairs (``dpo``, and ``scdpo`` where both
sides end the solution) are unaffected.

Reading back: :func:`read_pairs` reads a pairs table or a ``parquet`` / ``jsonl``
export (a split's file too), which is what ``stepdata train`` and ``stepdata
combine`` take. The ``trl`` and ``step-dpo`` layouts leave out the prefix steps,
kinds and flags the trainers need, so they are refused there with that advice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stepdata import __version__
from stepdata.io import (
    METADATA_KEY,
    SchemaError,
    atomic_path,
    read_metadata,
    read_table,
    redact_secrets,
    to_arrow,
)
from stepdata.pairs.build import pair_prompt_text, partial_answer
from stepdata.schema import ADDED_COLUMNS, PAIRS
from stepdata.steps import join_steps

EXPORT_FORMATS: tuple[str, ...] = ("trl", "step-dpo", "jsonl", "parquet")
TRL_COLUMNS: tuple[str, ...] = ("prompt", "chosen", "rejected")
STEP_DPO_COLUMNS: tuple[str, ...] = (
    "dataset", "prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen", "full_rejected", "answer",
)


class ExportError(ValueError):
    """A pair cannot be exported in the requested format; the message names the pair, row and field."""


def _where(row: Any, row_number: Any) -> str:
    return f"pair {row.pair_id!r} (input row {row_number})"


def _check_extra(df: pd.DataFrame, extra_columns: Sequence[str], taken: Sequence[str]) -> None:
    for name in extra_columns:
        if name not in PAIRS.names:
            raise ExportError(f"extra column {name!r} is not a pairs column; known: {PAIRS.names}")
        if name in taken:
            raise ExportError(f"extra column {name!r} clashes with a column of the export format")


def _pairs_arrow(df: pd.DataFrame) -> pa.Table:
    """``df`` validated as pairs rows (columns that are not pairs columns are left out), for a layout that is not
    a pairs table (trl, step-dpo, the dropped rows), so a pair id may repeat there."""
    return to_arrow(df[[c for c in df.columns if c in PAIRS.names]], "pairs", unique=False)


def _with_extra(columns: dict[str, list[Any]], pairs: pa.Table, extra_columns: Sequence[str]) -> pa.Table:
    arrays = [pa.array(values, type=pa.string(), from_pandas=True) for values in columns.values()]
    names = list(columns)
    for name in extra_columns:
        arrays.append(pairs.column(name).combine_chunks())
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def trl_table(df: pd.DataFrame, tokenizer: Any, extra_columns: Sequence[str] = ()) -> pa.Table:
    """TRL preference rows (prompt, chosen, rejected): ``prompt`` rendered with ``tokenizer``'s chat template.

    Raises ExportError naming the first pair without usable ``prompt_messages``.
    """
    _check_extra(df, extra_columns, TRL_COLUMNS)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ExportError("the tokenizer has no chat template; --format trl renders each pair's prompt_messages "
                          "with it (use the model the pairs were sampled from)")
    pairs = _pairs_arrow(df)
    prompts: list[str] = []
    for row_number, row in zip(df.index, df.itertuples(index=False)):
        if not isinstance(row.prompt_messages, str) or not row.prompt_messages.strip():
            raise ExportError(f"{_where(row, row_number)}: field 'prompt_messages' is empty; the trl format "
                              "renders the prompt from it")
        try:
            messages = json.loads(row.prompt_messages)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{_where(row, row_number)}: field 'prompt_messages' is not JSON ({exc})") from None
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise ExportError(f"{_where(row, row_number)}: field 'prompt_messages' must be a non-empty JSON list "
                              "of {role, content} messages")
        try:
            prompts.append(pair_prompt_text(tokenizer, row.prompt_messages, row.prefix_steps or []))
        except ValueError as exc:
            raise ExportError(f"{_where(row, row_number)}: cannot render the prompt: {exc}") from None
    columns = {"prompt": prompts, "chosen": list(df["chosen"]), "rejected": list(df["rejected"])}
    return _with_extra(columns, pairs, extra_columns)


def _continuation(full: Any, head: str, side: str, row: Any, row_number: Any) -> str | None:
    """``full`` after ``head``: the step and the rest of the solution (None when ``full`` is null)."""
    if not isinstance(full, str):
        return None
    if not full.startswith(head):
        raise ExportError(f"{_where(row, row_number)}: field '{side}_full' does not start with the partial answer "
                          "and prefix steps; the row was not built by make_pair")
    return full[len(head):]


def step_dpo_table(df: pd.DataFrame, extra_columns: Sequence[str] = ()) -> pa.Table:
    """Rows in the released Step-DPO column layout (see the module doc for what each column holds)."""
    _check_extra(df, extra_columns, STEP_DPO_COLUMNS)
    pairs = _pairs_arrow(df)
    columns: dict[str, list[Any]] = {name: [] for name in STEP_DPO_COLUMNS}
    for row_number, row in zip(df.index, df.itertuples(index=False)):
        try:
            head = partial_answer(row.prompt_messages) + join_steps(row.prefix_steps or [])
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ExportError(f"{_where(row, row_number)}: field 'prompt_messages' is not a JSON chat ({exc})") from None
        columns["dataset"].append(row.source)
        columns["prompt"].append(row.question)
        columns["initial_reason_steps"].append(head)
        columns["chosen"].append(row.chosen)
        columns["rejected"].append(row.rejected)
        columns["full_chosen"].append(_continuation(row.chosen_full, head, "chosen", row, row_number))
        columns["full_rejected"].append(_continuation(row.rejected_full, head, "rejected", row, row_number))
        columns["answer"].append(row.answer)
    return _with_extra(columns, pairs, extra_columns)


def export_table(
    df: pd.DataFrame,
    fmt: str,
    tokenizer: Any = None,
    extra_columns: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The Arrow table of ``df`` in format ``fmt`` (the validated pairs table, with ``config`` in its
    metadata, for ``jsonl`` and ``parquet``)."""
    if fmt == "trl":
        if tokenizer is None:
            raise ExportError("--format trl needs the model's tokenizer (--model) to render prompts")
        return trl_table(df, tokenizer, extra_columns)
    if fmt == "step-dpo":
        return step_dpo_table(df, extra_columns)
    if fmt in ("jsonl", "parquet"):
        if extra_columns:
            raise ExportError(f"extra columns apply to trl and step-dpo; --format {fmt} writes every pairs column")
        return to_arrow(df[[c for c in df.columns if c in PAIRS.names]], "pairs", config)
    raise ExportError(f"unknown export format {fmt!r}; expected one of {list(EXPORT_FORMATS)}")


def file_type(path: str | os.PathLike, fmt: str) -> str:
    """'parquet' or 'jsonl': fixed by ``fmt`` for those two, by the suffix of ``path`` for trl and step-dpo."""
    if fmt in ("jsonl", "parquet"):
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ExportError(f"{path}: --format {fmt} writes .parquet or .jsonl files; name the output with one of them")


def sibling_path(path: str | os.PathLike, tag: str, suffix: str | None = None) -> Path:
    """``runs/x.parquet`` -> ``runs/x.TAG.parquet`` (or with ``suffix`` instead of the file's own)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{tag}{suffix if suffix is not None else path.suffix}")


def write_jsonl(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` as JSON lines (UTF-8, one object per row), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in table.to_pylist())
    return path


def write_parquet(table: pa.Table, path: str | os.PathLike, kind: str, config: Mapping[str, Any] | None = None) -> Path:
    """Write ``table`` as Parquet with stepdata metadata of ``kind`` (so `stepdata show` says what it is)."""
    path = Path(path)
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps({"kind": kind, "stepdata_version": __version__,
                                         "config": redact_secrets(dict(config or {}))}, default=str).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    return path


def write_exported(
    table: pa.Table, path: str | os.PathLike, fmt: str, config: Mapping[str, Any] | None = None
) -> Path:
    """Write a table made by :func:`export_table` to ``path`` (Parquet or JSON lines, see :func:`file_type`)."""
    if file_type(path, fmt) == "jsonl":
        return write_jsonl(table, path)
    if fmt == "parquet":  # the pairs table already carries its stepdata metadata (kind, schema version, config)
        path = Path(path)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    return write_parquet(table, path, f"export:{fmt}", config)


def write_export(
    df: pd.DataFrame,
    path: str | os.PathLike,
    fmt: str,
    *,
    tokenizer: Any = None,
    extra_columns: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``df`` (a pairs table) to ``path`` in format ``fmt``; return the path.

    The table is built completely before anything is written, so a bad row fails
    the export without leaving a partial file.
    """
    file_type(path, fmt)  # a bad suffix fails before any prompt is rendered
    table = export_table(df, fmt, tokenizer, extra_columns, config)
    return write_exported(table, path, fmt, config)


def write_dropped(dropped: pd.DataFrame, path: str | os.PathLike, config: Mapping[str, Any] | None = None) -> Path:
    """Write the filters' dropped rows (pairs columns + drop columns) as Parquet or JSON lines (by suffix)."""
    from stepdata.pairs.filters import DROP_COLUMNS

    pairs = _pairs_arrow(dropped)
    input_rows = [None if pd.isna(v) else int(v) for v in dropped["input_row"]] if len(dropped) else []
    extra = [pa.array([None if pd.isna(v) else v for v in dropped[name]] if len(dropped) else [], type=pa.string())
             for name in DROP_COLUMNS if name != "input_row"]
    table = pa.Table.from_arrays(
        [*pairs.columns, *extra, pa.array(input_rows, type=pa.int64())],
        names=[*pairs.column_names, *[n for n in DROP_COLUMNS if n != "input_row"], "input_row"],
    )
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        return write_jsonl(table, path)
    return write_parquet(table, path, "pairs-dropped", config)


def read_dropped(path: str | os.PathLike) -> pd.DataFrame:
    """Read a file written by :func:`write_dropped` (Parquet or JSON lines)."""
    from stepdata.pairs.filters import DROP_COLUMNS

    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pd.DataFrame([json.loads(line) for line in lines], columns=[*PAIRS.names, *DROP_COLUMNS])
    return pq.read_table(path).to_pandas()


def _layout_of(columns: Sequence[str]) -> str | None:
    """Which export layout a set of column names is (None: neither trl nor step-dpo)."""
    if "initial_reason_steps" in columns:
        return "step-dpo"
    if "prompt" in columns:  # pairs rows carry prompt_messages, never a rendered prompt
        return "trl"
    return None


def _not_pairs_rows(path: Path, layout: str) -> ExportError:
    return ExportError(
        f"{path} is a {layout} export (columns {list(TRL_COLUMNS if layout == 'trl' else STEP_DPO_COLUMNS)}), "
        "not pairs rows: the trainers and `stepdata combine` read the pairs columns (prefix steps, kind, flags). "
        "Export with --format parquet or --format jsonl to get filtered, split pairs they can read")


def missing_pairs_hint(path: str | os.PathLike) -> str:
    """The split files `stepdata export --test-fraction` wrote instead of ``path``, named for the user."""
    found = [str(sibling_path(path, tag, suffix)) for tag in ("train", "test")
             for suffix in (Path(path).suffix, ".parquet", ".jsonl") if sibling_path(path, tag, suffix).exists()]
    found = list(dict.fromkeys(found))
    if not found:
        return f"{path} does not exist"
    return f"{path} does not exist; the export with a test split wrote {' and '.join(found)}: pass one of them"


def read_pairs(path: str | os.PathLike, *, ignore_unknown_columns: bool = False) -> pd.DataFrame:
    """Pairs rows from a pairs table or from what ``export --format parquet|jsonl`` wrote (a split too).

    Training and combining should see the deduplicated, filtered, split data an
    export leaves, in either of its pairs formats; every row is validated against
    the pairs schema. A trl or step-dpo export (rendered prompts, no prefix steps or
    kinds) is refused with a message saying how to export pairs rows instead.
    Raises FileNotFoundError, ExportError or SchemaError (both ValueErrors) naming the file.
    A Parquet table with columns that are not pairs columns is refused, unless
    ``ignore_unknown_columns`` (then they are dropped and named in ``df.attrs["ignored_columns"]``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_pairs_hint(path))
    if path.suffix.lower() not in (".jsonl", ".json"):
        try:
            meta = read_metadata(path)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid (not Parquet) is a ValueError
            reason = str(exc).removeprefix(f"{path}: ")
            raise ExportError(f"{path}: not a Parquet pairs table or a JSON lines pairs export ({reason})") from None
        layout = str(meta.get("kind", "")).removeprefix("export:")
        if layout in ("trl", "step-dpo"):
            raise _not_pairs_rows(path, layout)
        df = read_table(path, kind="pairs")
        unknown = [c for c in df.columns if c not in PAIRS.names]
        if unknown and not ignore_unknown_columns:
            raise SchemaError(f"{path}: pairs table has unknown column(s) {unknown}")
        df = df[list(PAIRS.names)]
        df.attrs["ignored_columns"] = unknown
        return df
    records = []
    # a byte-order mark is skipped; bytes that are not UTF-8 reach the schema check, which names row and column
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise ExportError(f"{path}, line {number}: a pairs row is a JSON object, not {type(record).__name__}")
            records.append(record)
    if not records:
        raise ExportError(f"{path} has no rows")
    layout = _layout_of(list(records[0]))
    if layout is not None:
        raise _not_pairs_rows(path, layout)
    added = ADDED_COLUMNS.get("pairs", {})
    for number, record in enumerate(records, start=1):
        for name, value in added.items():  # an export written before the column: what it did not record
            record.setdefault(name, value)
        missing = [name for name in PAIRS.names if name not in record]
        unknown = [name for name in record if name not in PAIRS.names]
        if missing or unknown:
            raise SchemaError(f"{path}, row {number}: not a pairs row (missing {missing}, unknown {unknown})")
    try:
        table = to_arrow(pd.DataFrame(records, columns=list(PAIRS.names)), "pairs")
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    df = table.to_pandas()
    for field in table.schema:  # lists as Python lists, as read_table gives them
        if pa.types.is_list(field.type):
            df[field.name] = [None if v is None else list(v) for v in df[field.name]]
    df.attrs["stepdata"] = {"kind": "pairs", "read_from": "jsonl"}
    return df
