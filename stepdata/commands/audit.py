"""``audit`` (the HTML page of a pairs, localized or rollouts table) and ``compare-localizers``
(several localized tables of the same rollouts side by side): what a person reads before trusting the data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pandas as pd

from stepdata.io import (
    SchemaError,
    UnreadableTable,
    read_metadata,
    read_table,
    write_text_atomic,
)

data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
                               help="Folder holding the named data sets ($STEPDATA_DATA_DIR).")
problems_option = click.option(
    "--problems", "problems_source", metavar="SOURCE",
    help="A problems table or data set, to show each solution's question and gold answer (default: the one the "
         "table records, when it is still there; pairs carry their own).")


def _read_audited(path: str) -> pd.DataFrame:
    """A pairs, localized or rollouts table (by its metadata; a foreign Parquet file by its columns)."""
    from stepdata.audit.kinds import AUDITED_KINDS

    try:
        kind = read_metadata(path).get("kind")
        if kind is not None and kind not in AUDITED_KINDS:
            raise click.ClickException(f"{path}: expected a pairs, localized or rollouts table, found a {kind} table")
        if kind is None:  # a foreign file: the kind its columns fit, read with that kind's schema checks
            import pyarrow.parquet as pq

            from stepdata.audit.kinds import kind_from_columns

            kind = kind_from_columns(pq.read_schema(path).names)
        return read_table(path, kind=kind)
    except UnreadableTable as exc:  # not Parquet inside: say so rather than what a table needs
        reason = str(exc).removeprefix(f"{path}: ")
        raise click.ClickException(f"{path}: cannot read it as a Parquet table ({reason})") from None
    except SchemaError as exc:
        raise click.ClickException(f"{exc} (stepdata audit needs a pairs, localized or rollouts table)") from None
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError: not a Parquet file
        raise click.ClickException(f"{path}: cannot read it as a Parquet table ({exc})") from None


def _problems(table: str, given: str | None, data_dir: str | None) -> pd.DataFrame | None:
    """``--problems``, else the table's recorded problems when they still load (else None, said on stderr)."""
    from stepdata.pipeline.lineage import lineage_of, load_lineage_problems

    recorded = lineage_of(table).get("problems")
    try:
        return load_lineage_problems(recorded, data_dir, given=given, needed_by="audit")
    except (FileNotFoundError, ValueError, OSError) as exc:
        if given is not None:
            raise click.ClickException(f"--problems {given}: {exc}") from None
        click.echo(f"questions not shown: the problems the table records ({recorded}) do not load ({exc}); "
                   "give --problems", err=True)
        return None


@click.command("audit")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="HTML report to write.")
@click.option("--max-rows", "--max-pairs", "max_rows", type=click.IntRange(min=0),
              help="Render at most N pairs or solutions (the page says how many were left out; counts and plots "
                   "cover all).")
@click.option("--title", help="Page title (default: 'Pairs audit: FILE NAME', 'Localized audit: ...', ...).")
@problems_option
@data_dir_option
def audit_cmd(table: str, out: str, max_rows: int | None, title: str | None, problems_source: str | None,
              data_dir: str | None) -> None:
    """Write a self-contained HTML page auditing TABLE (no network needed to view it).

    TABLE is a pairs table (each pair: shared prefix, rejected step beside the chosen one), a
    localized table (each wrong solution: steps from 1, the first error highlighted, the localizer's
    evidence beside it) or a rollouts table (each solution and how it ended); its kind is read from
    its metadata. The page filters itself (kind, localizer, status, outcome, text) in the browser.
    """
    from stepdata.audit import write_report
    from stepdata.audit.kinds import table_kind

    df = _read_audited(table)
    try:
        found = table_kind(df)
    except ValueError as exc:
        raise click.ClickException(f"{table}: {exc}") from None
    problems = None if found.kind == "pairs" else _problems(table, problems_source, data_dir)
    default_title = f"{found.kind.capitalize()} audit: {Path(table).name}"
    path = write_report(df, out, title=title or default_title, max_pairs=max_rows, problems=problems)
    noun = "pairs" if found.kind == "pairs" else f"{found.kind} rows"
    shown = len(df) if max_rows is None else min(max_rows, len(df))
    left_out = f"; {len(df) - shown} left out by --max-rows {max_rows}" if shown < len(df) else ""
    guessed = " (kind guessed from its columns: the file has no stepdata metadata)" if found.source == "columns" else ""
    click.echo(f"wrote the audit of {len(df)} {noun}{guessed} ({shown} rendered{left_out}) to {path}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


@click.command("compare-localizers")
@click.argument("tables", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="HTML page to write.")
@click.option("--reference", metavar="NAME|FILE",
              help="The reference for precision and recall: the name of one of TABLES (as listed), or another "
                   "localized table (e.g. exact on embedded problems, people's labels from --method human).")
@click.option("--name", "names", multiple=True,
              help="Names for TABLES, in order (default: the method each run recorded; a name taken twice gets "
                   "' (2)'). Repeatable.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the numbers here (agreement, scores, unmatched solutions) as JSON.")
@click.option("--max-solutions", type=click.IntRange(min=0),
              help="Render at most N solutions, disagreements first (the numbers cover all).")
@click.option("--title", default="stepdata localizer comparison", show_default=True, help="Page title.")
@problems_option
@data_dir_option
def compare_cmd(tables: tuple[str, ...], out: str, reference: str | None, names: tuple[str, ...],
                json_out: str | None, max_solutions: int | None, title: str, problems_source: str | None,
                data_dir: str | None) -> None:
    """Compare localized tables of the same rollouts (e.g. rules, judge, rollouts, exact) side by side.

    Solutions are matched by rollout_id; those missing from a table, or whose steps differ between
    tables, are listed and left out of the numbers. The page holds the agreement of every pair of
    localizers (same first-error step; error vs no error), precision and recall against --reference,
    plots (first-error position per localizer, accuracy by problem, confidence against agreement)
    and the solutions to read, filtered in the page (agreement, localizer, text).
    """
    from stepdata.audit.compare import compare_localizers, localizer_name, unique_names

    paths = list(tables)
    if names and len(names) != len(paths):
        raise click.BadParameter(f"{len(names)} names for {len(paths)} tables", param_hint="--name")
    frames = {}
    for i, path in enumerate(paths):
        try:
            df = read_table(path, kind="localized")
        except (SchemaError, ValueError, OSError) as exc:
            raise click.ClickException(f"{exc} (compare-localizers needs localized tables)"
                                       if str(path) in str(exc) else f"{path}: {exc}") from None
        frames[path] = (names[i] if names else localizer_name(df, Path(path).stem), df)
    resolved = [str(Path(p).resolve()) for p in frames]
    reference_path = str(Path(reference).resolve()) if reference is not None and Path(reference).is_file() else None
    if reference_path is not None and reference_path not in resolved:
        try:  # a reference that is not among the tables compared joins them
            df = read_table(reference, kind="localized")
        except (SchemaError, ValueError, OSError) as exc:
            raise click.ClickException(f"--reference {reference}: {exc}") from None
        frames[reference] = (localizer_name(df, Path(reference).stem), df)
        resolved.append(reference_path)
    unique = unique_names([n for n, _ in frames.values()])
    reference_name = unique[resolved.index(reference_path)] if reference_path is not None else reference
    try:
        cmp = compare_localizers(dict(zip(unique, (df for _, df in frames.values()))), reference=reference_name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    cmp.sources = dict(zip(unique, frames))
    problems = _problems(paths[0], problems_source, data_dir)
    cmp.report(out, title=title, max_solutions=max_solutions, problems=problems)
    agree = int(cmp.verdicts["all_agree"].sum()) if len(cmp.codes) else 0
    click.echo(f"compared {len(cmp.names)} localizers ({', '.join(cmp.names)}) on {len(cmp.codes)} solutions "
               f"({len(cmp.unmatched)} not in every table, left out); all agree on {agree}")
    for row in cmp.agreement.itertuples():
        click.echo(f"  {row.a} vs {row.b}: same step {_share(row.step_agreement)}, error vs no error "
                   f"{_share(row.detection_agreement)} (of {row.both_decided} both decided)")
    for row in cmp.scores.itertuples():
        click.echo(f"  against {cmp.reference}: {row.localizer} step precision {_share(row.step_precision)}, recall "
                   f"{_share(row.step_recall)}; error precision {_share(row.detect_precision)}, recall "
                   f"{_share(row.detect_recall)} ({row.compared} compared, {row.undecided} undecided)")
    if json_out:
        numbers = {"localizers": cmp.names, "tables": cmp.sources, "reference": cmp.reference,
                   "matched": len(cmp.codes), "all_agree": agree,
                   "agreement": cmp.agreement.to_dict("records"), "scores": cmp.scores.to_dict("records"),
                   "unmatched": cmp.unmatched.to_dict("records")}
        write_text_atomic(json_out, json.dumps(_jsonable(numbers), indent=1, ensure_ascii=False))
    click.echo(f"wrote the comparison to {out}")
