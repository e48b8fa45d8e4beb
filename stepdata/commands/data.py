"""Commands that make, list and show tables: ``problems``, ``make-problems``, ``datasets`` and ``show``.

They are the way in (a data set or a file becomes a problems table) and the way to look at any table
a stage writes, so each step of the pipeline can be checked from the shell.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

import stepdata
from stepdata.commands.common import column_mapping, problem_steps_options
from stepdata.io import (
    SchemaError,
    UnreadableTable,
    read_metadata,
    read_table,
    write_table,
    write_text_atomic,
)
from stepdata.loaders import KNOWN_SETS, BadRowError, load_problems


@click.command("problems")
@click.argument("source")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Problems table to write (.parquet).")
@click.option("--format", "fmt", type=click.Choice(["gsm8k", "math", "svamp", "multiarith", "asdiv", "processbench",
                                                       "generic"]),
              help="Data set format (detected when omitted).")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS",
              help="Map a column, e.g. --column question=prompt --column answer=target.")
@click.option("--skip-bad-rows", is_flag=True, help="Record bad rows in OUT.bad_rows.jsonl instead of failing.")
@click.option("--limit", type=int, help="Read at most this many problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Folder holding the named data sets.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for embedded problems.")
def problems_cmd(source: str, out: str, fmt: str | None, columns: tuple[str, ...], skip_bad_rows: bool,
                 limit: int | None, data_dir: str | None, seed: int) -> None:
    """Load SOURCE (a file or a data set name) and write it as a problems table."""
    mapping = column_mapping(columns)
    try:
        df = load_problems(source, format=fmt, columns=mapping, skip_bad_rows=skip_bad_rows,
                           limit=limit, data_dir=data_dir, seed=seed)
    except (BadRowError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    config = {"command": "problems", "source": source, "format": fmt, "columns": mapping, "limit": limit, "seed": seed}
    write_table(df, out, "problems", config=config)
    bad = df.attrs.get("bad_rows", [])
    click.echo(f"wrote {len(df)} problems to {out}")
    if bad:
        bad_path = Path(out).with_suffix(".bad_rows.jsonl")
        write_text_atomic(bad_path, "".join(json.dumps(r) + "\n" for r in bad))
        click.echo(f"skipped {len(bad)} bad row(s); listed in {bad_path}", err=True)


@click.command("make-problems")
@click.option("--n", "count", type=int, default=100, show_default=True, help="How many problems.")
@click.option("--seed", type=int, default=0, show_default=True)
@problem_steps_options
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
def make_problems_cmd(count: int, seed: int, min_steps: int, max_steps: int, out: str) -> None:
    """Generate embedded arithmetic word problems (no external data needed)."""
    if min_steps > max_steps:
        raise click.BadParameter("--min-problem-steps is larger than --max-problem-steps")
    df = stepdata.make_problems(count, seed=seed, min_steps=min_steps, max_steps=max_steps)
    write_table(df, out, "problems", config={"command": "make-problems", "n": count, "seed": seed,
                                             "min_problem_steps": min_steps, "max_problem_steps": max_steps})
    click.echo(f"wrote {len(df)} embedded problems to {out}")


@click.command("datasets")
def datasets_cmd() -> None:
    """List the data set names load_problems understands."""
    for name, (relative, fmt, _source) in KNOWN_SETS.items():
        click.echo(f"{name:20s} {fmt:13s} <data-dir>/{relative}")
    click.echo(f"{'embedded[:N]':20s} {'generated':13s} (built in, no files)")


def _refuse_non_parquet(path: str) -> None:
    """Stop with a message saying what ``path`` is when it is not Parquet (pyarrow's own error names
    footer bytes, not the file the user gave or what to do instead)."""
    file = Path(path)
    size = file.stat().st_size
    if size == 0:
        raise click.ClickException(f"{path} is empty (0 bytes); `stepdata show` reads Parquet tables")
    with open(file, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head == b"PAR1" and tail == b"PAR1":
        return
    if size < 12 or head == b"PAR1":
        raise click.ClickException(f"{path} is not a complete Parquet file ({size} bytes, no Parquet footer); "
                                   "was it cut short while being written?")
    start = head.lstrip()[:1]
    looks = {b"{": "JSON lines or JSON", b"[": "JSON"}.get(start, "CSV or text" if start.isascii() else "not Parquet")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".tsv"):
        looks = {".jsonl": "JSON lines", ".json": "JSON", ".csv": "CSV", ".tsv": "TSV"}[suffix]
    raise click.ClickException(
        f"{path} is not a Parquet file (it looks like {looks}); `stepdata show` reads Parquet tables (stepdata's "
        f"problems, rollouts, localized, attempts and pairs tables, exports, or any Parquet file); a problems "
        f"file becomes a table with `stepdata problems {path} --out problems.parquet`")


@click.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rows", type=int, default=5, show_default=True, help="How many rows to print.")
def show_cmd(path: str, rows: int) -> None:
    """Describe a stepdata table: kind, schema version, config, size and first rows.

    Any other Parquet file is shown as far as it can be (rows, columns, first rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepdata.schema import schema_for

    _refuse_non_parquet(path)
    try:
        meta = read_metadata(path)
    except UnreadableTable as exc:  # not Parquet inside, a broken footer: there are no rows to show either
        raise click.ClickException(f"{exc}; was it cut short while being written?") from None
    except (ValueError, pa.ArrowException) as exc:  # metadata that is not a JSON object
        meta = {"kind": None, "unreadable": str(exc).removeprefix(f"{path}: ")}
    try:
        df = pq.read_table(path).to_pandas() if "unreadable" in meta else read_table(path)
    except (SchemaError, ValueError, OSError, pa.ArrowException) as exc:
        raise click.ClickException(f"{path}: cannot read its rows ({exc})") from None
    if "unreadable" in meta:
        click.echo(f"kind: unknown (its stepdata metadata cannot be read: {meta['unreadable']})")
    elif not meta:
        click.echo("kind: not a stepdata table (a Parquet file without stepdata metadata); its rows and columns:")
    else:
        click.echo(f"kind: {meta.get('kind', 'unknown')}")
        click.echo(f"schema version: {meta.get('schema_version')}  written by stepdata {meta.get('stepdata_version')}")
        click.echo(f"config: {json.dumps(meta.get('config', {}))}")
        try:
            missing = [n for n in schema_for(meta.get("kind")).names if n not in df.columns]
        except (KeyError, ValueError):  # an export layout (export:trl, ...) has no stepdata schema
            missing = []
        if missing:
            click.echo(f"warning: a {meta['kind']} table should have column(s) {missing}", err=True)
    click.echo(f"rows: {len(df)}  columns: {', '.join(df.columns)}")
    if rows:
        with_pd = df.head(rows).to_string(max_colwidth=60)
        click.echo(with_pd)
