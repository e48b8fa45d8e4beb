"""Commands on finished tables: ``merge`` (a stage's shards), ``combine`` (several stages' pairs) and
``stats`` (what a pairs table holds), between the stages and ``export``; ``audit`` is in ``commands.audit``."""

from __future__ import annotations

import json

import click

from stepdata.commands.common import plugin_option, read_pairs
from stepdata.io import (
    read_metadata,
    write_text_atomic,
)


@click.command("merge")
@click.argument("shards", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="The output as given to the stage (a pair stage's pairs table; its attempts go beside it).")
@plugin_option
def merge_cmd(shards: tuple[str, ...], out: str, plugins: tuple[str, ...]) -> None:
    """Join the shards of one stage run into the table the unsharded run writes at OUT.

    SHARDS are the shard tables (a pair stage's attempts or pairs shards); without them
    the shards of OUT are found by name (OUT.shard-*-of-N). Refused, naming the ranks: a
    missing rank, a rank given twice, mixed world sizes, configs or inputs, an unfinished
    shard. Rows go back in input order; a pair stage's pairs are flattened and capped per
    problem over the whole; the summary is recomputed. A later unsharded run of the same
    stage, config and input finds OUT finished. A pair stage that checked its chosen steps
    with a plugin's localizer needs that --plugin here too (its config names it).
    """
    from stepdata.pipeline.merge import MergeError, find_shards, merge_shards
    from stepdata.pipeline.run import read_stamp

    try:
        paths = list(shards) or find_shards(out)
        merged = merge_shards(paths, out)
    except (MergeError, ValueError, OSError) as exc:
        hint = ""
        try:
            if shards and all(read_metadata(path).get("kind") == "pairs" and "shard" not in (read_stamp(path) or {})
                              for path in shards):
                hint = ("; to join the pairs of different stages (rectify, synthesize) into one training set use "
                        "`stepdata combine PAIRS... --out FILE`")
        except (ValueError, OSError):
            pass
        raise click.ClickException(f"{exc}{hint}") from None
    pairs = f"; {len(merged.pairs)} pairs in {merged.pairs_path}" if merged.pairs is not None else ""
    click.echo(f"merged {len(merged.shards)} shard(s), {len(merged.table)} rows, into {merged.path}{pairs}; "
               f"summary in {merged.path}.summary.json")


@click.command("combine")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Pairs table to write (.parquet).")
def combine_cmd(pairs: tuple[str, ...], out: str) -> None:
    """Join the pairs tables of several stages (e.g. rectify's and synthesize's) into one pairs table.

    Reads pairs tables and `stepdata export --format parquet|jsonl` output; refuses
    other tables and pair ids that repeat. The sources are recorded in OUT's metadata.
    Then `stepdata export OUT ...` filters, deduplicates and splits the whole set.
    """
    from stepdata.pairs.combine import combine_pairs

    try:
        combined = combine_pairs(list(pairs), out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    counts = ", ".join(f"{k} {v}" for k, v in combined["kind"].value_counts().items())
    click.echo(f"combined {len(pairs)} table(s), {len(combined)} pairs ({counts}), into {out}")


@click.command("stats")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--dropped", "dropped_path", type=click.Path(exists=True, dir_okay=False),
              help="Rows dropped by `stepdata export` (OUT.dropped.parquet or .jsonl), counted by filter and reason.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the statistics here as JSON.")
def stats_cmd(pairs: str, dropped_path: str | None, json_out: str | None) -> None:
    """Print statistics of the pairs table PAIRS: kinds, sources, error steps, pairs per problem, lengths, flags."""
    from stepdata.pairs.export import read_dropped
    from stepdata.pairs.filters import DROP_COLUMNS
    from stepdata.pairs.stats import pairs_stats, render_stats

    df = read_pairs(pairs)
    dropped = None
    if dropped_path:
        try:
            dropped = read_dropped(dropped_path)
        except (ValueError, OSError) as exc:
            raise click.ClickException(f"{dropped_path}: {exc}") from None
        missing = [c for c in ("drop_filter", "drop_reason") if c not in dropped.columns]
        if missing:
            raise click.ClickException(f"{dropped_path}: not a dropped-rows file (no column(s) {missing}; "
                                       f"expected {list(DROP_COLUMNS)})")
    stats = pairs_stats(df, dropped)
    click.echo(render_stats(stats))
    if json_out:
        write_text_atomic(json_out, json.dumps(stats, indent=1, ensure_ascii=False))


@click.group("pairs")
def pairs_group() -> None:
    """Pairs tables made otherwise than by the pair stages (rectify, synthesize)."""


@pairs_group.command("from-corrections")
@click.argument("localized", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Pairs table to write (.parquet).")
@click.option("--problems", "problems_source",
              help="Problems table or data set (default: the one LOCALIZED records).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Folder holding the named data sets ($STEPDATA_DATA_DIR).")
@click.option("--template", help="The template the rollouts were sampled with (default: the one LOCALIZED records).")
def from_corrections_cmd(localized: str, out: str, problems_source: str | None, data_dir: str | None,
                         template: str | None) -> None:
    """Step-DPO pairs whose chosen step is a person's correction, from LOCALIZED (`localize --method human`).

    Each row whose label gives the first wrong step and a corrected step becomes one pair: the
    policy's prompt and prefix, rejected = its wrong step, chosen = the person's text in that step's
    frame (its "Step k:" marker and whitespace). The pairs are out of distribution (the policy did not
    write chosen): chosen_source is "human". Every row's outcome is counted in OUT.summary.json.
    """
    from stepdata.pairs.corrections import write_correction_pairs
    from stepdata.pipeline.lineage import lineage_of, load_lineage_problems

    try:
        lineage = lineage_of(localized)
        problems = load_lineage_problems(lineage.get("problems"), data_dir, given=problems_source,
                                         needed_by="pairs from-corrections")
        if problems is None:
            raise click.UsageError("give --problems (LOCALIZED records none)")
        pairs, summary = write_correction_pairs(localized, out, problems, template or lineage.get("template")
                                                or "step_by_step", lineage)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    outcomes = ", ".join(f"{name} {n}" for name, n in summary["outcomes"].items())
    verified = ", ".join(f"{name} {n}" for name, n in summary["chosen_verified"].items())
    click.echo(f"wrote {len(pairs)} step-dpo pairs with a person's corrected step (chosen_source human) to {out}, "
               f"from {summary['rows']} localized rows ({outcomes}); chosen steps checked: {verified}; summary in "
               f"{out}.summary.json")
