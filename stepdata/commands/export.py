"""``export``: filter a pairs table, split it by problem and write it in a trainer's layout.

Every row it leaves out is written with its reason, and a split side with no rows is reported
rather than written empty, so what reaches training is accounted for row by row.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from stepdata.commands.common import load_tokenizer, read_pairs
from stepdata.io import SchemaError, write_text_atomic


@click.command("export")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Output file (.parquet or .jsonl). With --test-fraction: OUT.train.* and OUT.test.*; "
                   "dropped rows go to OUT.dropped.*, the summary to OUT.summary.json.")
@click.option("--format", "fmt", type=click.Choice(["trl", "step-dpo", "jsonl", "parquet"]), default="parquet",
              show_default=True,
              help="trl: prompt (chat template + partial answer + prefix), chosen, rejected; step-dpo: the released "
                   "Step-DPO columns; jsonl / parquet: the pairs rows.")
@click.option("--model", help="Model folder whose tokenizer renders prompts (--format trl) and counts tokens (--max-tokens).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Share of problems (not pairs) held out for test; every pair of a problem lands on one side. "
                   "A side with no pairs is not written (the output and summary say so).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the problem hash that decides the split.")
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Drop exact duplicates and pairs equal after normalising case, whitespace and punctuation.")
@click.option("--near-dup-threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Also drop pairs whose chosen and rejected both reach this character n-gram Jaccard similarity "
                   "with an earlier pair of the same problem and prefix (and state the same numbers), e.g. 0.9.")
@click.option("--ngram", type=click.IntRange(1), default=3, show_default=True, help="n of the n-gram Jaccard.")
@click.option("--max-chars", type=click.IntRange(1), help="Drop pairs whose chosen or rejected is longer (characters).")
@click.option("--max-tokens", type=click.IntRange(1), help="Drop pairs whose chosen or rejected is longer (tokens of --model).")
@click.option("--keep-unverified", is_flag=True,
              help="Keep pairs whose chosen side failed its check (chosen_verified False); left out by default.")
@click.option("--with-column", "extra_columns", multiple=True, metavar="COLUMN",
              help="Carry a pairs column into trl / step-dpo output, e.g. --with-column chosen_ends_solution.")
def export_cmd(pairs: str, out: str, fmt: str, model: str | None, test_fraction: float, seed: int, dedup: bool,
               near_dup_threshold: float | None, ngram: int, max_chars: int | None, max_tokens: int | None,
               extra_columns: tuple[str, ...], keep_unverified: bool) -> None:
    """Filter the pairs table PAIRS, optionally split it by problem, and write it for training.

    Every removed row is written, with the filter and the reason, to OUT.dropped.*.
    No EOS is added to any text (see stepdata/pairs/export.py).
    """
    from stepdata.pairs.export import (
        ExportError,
        export_table,
        file_type,
        sibling_path,
        write_dropped,
        write_exported,
    )
    from stepdata.pairs.filters import FilterConfig, apply_filters
    from stepdata.pairs.split import split_by_problem
    from stepdata.pairs.stats import pairs_stats, render_stats

    if fmt == "trl" and model is None:
        raise click.UsageError("--format trl needs --model (its tokenizer's chat template renders the prompts)")
    if max_tokens is not None and model is None:
        raise click.UsageError("--max-tokens needs --model (tokens are counted with its tokenizer)")
    if near_dup_threshold is not None and not dedup:
        raise click.UsageError("--near-dup-threshold needs --dedup")
    try:
        out_type = file_type(out, fmt)
    except ExportError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    df = read_pairs(pairs)
    tokenizer = load_tokenizer(model) if model else None
    filters = FilterConfig(max_chars=max_chars, max_tokens=max_tokens, dedup=dedup,
                           near_dup_threshold=near_dup_threshold, ngram=ngram, keep_unverified=keep_unverified)
    config = {"command": "export", "source": pairs, "format": fmt, "model": model, "test_fraction": test_fraction,
              "seed": seed, "extra_columns": list(extra_columns), **dataclasses.asdict(filters)}
    kept, dropped = apply_filters(df, filters, tokenizer=tokenizer)
    if test_fraction > 0:
        train, test = split_by_problem(kept, test_fraction, seed)
        parts = {"train": (sibling_path(out, "train"), train), "test": (sibling_path(out, "test"), test)}
    else:
        parts = {"all": (Path(out), kept)}
    try:  # build every output before writing any, so a bad row leaves no partial export
        tables = {name: export_table(part, fmt, tokenizer, extra_columns, config | {"split": name})
                  for name, (_, part) in parts.items()}
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    except SchemaError as exc:  # rows are named as in PAIRS (the filters keep each row's input number)
        hint = " (--dedup drops repeated pairs)" if "unique" in str(exc) and not dedup else ""
        raise click.ClickException(f"{pairs}: {exc}{hint}") from None
    files: dict[str, str | None] = {}
    not_written = _empty_exports(parts, len(kept), test_fraction, seed)
    for name, (path, _) in parts.items():
        if name in not_written:  # an empty file is no data set: datasets.load_dataset cannot read it
            files[name] = None
            if path.exists():  # left by an earlier export to the same name: it would be taken for this one
                path.unlink()
                not_written[name] += f"; removed the earlier {path}"
            continue
        files[name] = str(write_exported(tables[name], path, fmt, config | {"split": name}))
    dropped_path = sibling_path(out, "dropped", ".jsonl" if out_type == "jsonl" else ".parquet")
    files["dropped"] = str(write_dropped(dropped, dropped_path, config))
    stats = pairs_stats(kept, dropped)
    split_counts = {name: {"pairs": len(part), "problems": int(part["problem_id"].nunique())}
                    for name, (_, part) in parts.items()}
    summary_path = sibling_path(out, "summary", ".json")
    summary = {"config": config, "rows_in": len(df), "kept": len(kept), "dropped": len(dropped),
               "split": split_counts, "files": files, "not_written": not_written, "stats": stats}
    write_text_atomic(summary_path, json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    click.echo(render_stats(stats))
    click.echo(f"read {len(df)} pairs from {pairs}; kept {len(kept)}, dropped {len(dropped)} "
               f"(listed with reasons in {files['dropped']})")
    for name, (path, part) in parts.items():
        if name in not_written:
            click.echo(f"wrote no {'file' if name == 'all' else name + ' split'} ({path}): {not_written[name]}")
        else:
            click.echo(f"wrote {len(part)} pairs ({split_counts[name]['problems']} problems) as {fmt} to {path}")
    click.echo(f"summary in {summary_path}")


def _empty_exports(parts: dict, kept: int, test_fraction: float, seed: int) -> dict[str, str]:
    """Why each export part with no rows is not written (by part name: all, train, test)."""
    problems = sum(int(part["problem_id"].nunique()) for _, part in parts.values())
    reasons = {}
    for name, (_, part) in parts.items():
        if len(part):
            continue
        if name == "all" or not kept:
            reasons[name] = "no pairs are left after the filters"
        else:
            reasons[name] = (f"no pairs: none of the {problems} problems falls on the {name} side at --test-fraction "
                             f"{test_fraction} (seed {seed}); try {'a larger' if name == 'test' else 'a smaller'} "
                             "--test-fraction or another --seed")
    return reasons
