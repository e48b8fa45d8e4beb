"""The audit report: one self-contained HTML page for a whole table (pairs, rollouts or localized).

One file, no network: inline CSS, inline SVG plots, one small inline script
(the filter). It can be mailed, attached to an issue or opened from an
air-gapped cluster, and shows the same thing in ten years.

:func:`render_report` takes any of the three tables a researcher audits and
renders the page of its kind (:mod:`stepdata.audit.kinds` says which): pairs
here, rollouts and localized tables in :mod:`stepdata.audit.solutions_report`.

Safety: model text is escaped (see :mod:`stepdata.audit.pair_html`), and as a
second line of defence the page carries a Content-Security-Policy that lets
only our own filter script run (by its hash) and forbids every network load
(:mod:`stepdata.audit.page`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from stepdata.audit import theme
from stepdata.audit.kinds import table_kind
from stepdata.audit.page import (
    CSP,
    FILTER_SCRIPT,
    counts_table,
    figures,
    filter_bar,
    html_page,
    left_out_note,
    made_by,
    metadata_html,
    percent,
    stat,
)
from stepdata.audit.pair_html import pair_block
from stepdata.audit.summary import PairsSummary, summarize
from stepdata.audit.svg import bar_chart
from stepdata.io import write_text_atomic

__all__ = ["CSP", "FILTER_SCRIPT", "left_out_note", "plots_html", "render_pairs_report", "render_report",
           "summary_html", "write_report"]


def _chars(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def summary_html(summary: PairsSummary) -> str:
    """The summary numbers (pairs, problems, checks, lengths) and the counts by kind and source."""
    stats = "".join([
        stat("pairs", str(summary.pairs), "pairs"),
        stat("problems", str(summary.problems), "problems"),
        stat("verified_share", percent(summary.verified, summary.pairs),
             f"chosen verified ({summary.verified} of {summary.pairs})"),
        stat("failed_check", str(summary.failed_check), "chosen failed its check"),
        stat("unchecked", str(summary.unchecked), "chosen not checked"),
        stat("median_chars", f"{_chars(summary.median_chosen_chars)} / {_chars(summary.median_rejected_chars)}",
             "median chars, chosen / rejected"),
    ])
    return (f'<div class="sd-stats">{stats}</div>'
            f'<div>{counts_table("kind", summary.by_kind, summary.pairs)}'
            f'{counts_table("source", summary.by_source, summary.pairs)}</div>')


def plots_html(summary: PairsSummary) -> str:
    """The three histograms: where errors are, how pairs spread over problems, chosen vs rejected length."""
    errors = bar_chart("Pairs by error step", summary.error_steps.labels,
                       [("pairs", theme.REJECTED, summary.error_steps.series["pairs"])],
                       "first wrong step (shown from 1)", "pairs")
    per_problem = bar_chart("Pairs per problem", summary.pairs_per_problem.labels,
                            [("problems", theme.NEUTRAL, summary.pairs_per_problem.series["problems"])],
                            "pairs of one problem", "problems")
    lengths = bar_chart("Length of chosen vs rejected", summary.lengths.labels,
                        [("chosen", theme.CHOSEN, summary.lengths.series["chosen"]),
                         ("rejected", theme.REJECTED, summary.lengths.series["rejected"])],
                        "characters", "pairs")
    return figures([("error_step", errors), ("pairs_per_problem", per_problem), ("lengths", lengths)])


def _pairs_filter(kinds: list[str]) -> str:
    return filter_bar("article.sd-pair", "pairs", [
        ("kind", "all kinds", [(k, k) for k in kinds]),
        ("verified", "verified or not", [("true", "chosen verified"), ("false", "chosen failed its check"),
                                         ("unknown", "chosen not checked")]),
    ], placeholder="filter: text, pair_id, problem...")


def _check_max(max_rows: int | None) -> None:
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_rows}")


def render_pairs_report(pairs_df: pd.DataFrame, title: str = "stepdata pairs audit",
                        max_pairs: int | None = None) -> str:
    """One self-contained HTML page auditing a pairs table.

    Summary numbers and plots count every row; then each pair is rendered
    (question, shared prefix, rejected step in red beside the chosen one in
    green). With ``max_pairs``, only the first ``max_pairs`` pairs are rendered
    and the page says how many were left out.
    """
    _check_max(max_pairs)
    summary = summarize(pairs_df)
    total = len(pairs_df)
    shown_df = pairs_df if max_pairs is None else pairs_df.head(max_pairs)
    note = left_out_note(len(shown_df), total, f"max_pairs={max_pairs}")
    blocks = "\n".join(pair_block(row) for row in shown_df.to_dict("records"))
    shown_kinds = set(shown_df["kind"].dropna().astype(str)) if "kind" in shown_df.columns else set()
    kinds = [k for k in summary.by_kind if k in shown_kinds]
    return html_page(title, (
        f'<p class="sd-muted">{total} pairs from {summary.problems} problems. Steps are numbered from 1 here '
        f"(error_step k in the data is Step k+1). {made_by()}</p>"
        f"<h2>Summary</h2>{summary_html(summary)}"
        f"{plots_html(summary)}"
        f"{metadata_html(dict(pairs_df.attrs.get('stepdata') or {}))}"
        f"<h2>Pairs</h2>{note}{_pairs_filter(kinds)}\n{blocks}\n{note}"
    ))


def render_report(df: pd.DataFrame, title: str | None = None, max_pairs: int | None = None,
                  kind: str | None = None, problems: pd.DataFrame | None = None) -> str:
    """The audit page of ``df``: a pairs, rollouts or localized table (its kind from its metadata, else its
    columns; ``kind=`` overrides). ``max_pairs`` caps the pairs or solutions rendered (counts cover all);
    ``problems`` (a problems table) adds each solution's question and gold answer (pairs carry their own)."""
    found = table_kind(df, kind)
    if found.kind == "pairs":
        return render_pairs_report(df, title=title or "stepdata pairs audit", max_pairs=max_pairs)
    from stepdata.audit.solutions_report import render_solutions_report

    return render_solutions_report(df, title=title, max_solutions=max_pairs, found=found, problems=problems)


def write_report(df: pd.DataFrame, path: str | os.PathLike, title: str | None = None,
                 max_pairs: int | None = None, kind: str | None = None, problems: pd.DataFrame | None = None) -> Path:
    """Render the report of ``df`` (see :func:`render_report`) and write it to ``path`` (UTF-8); returns the path."""
    return write_text_atomic(path, render_report(df, title=title, max_pairs=max_pairs, kind=kind, problems=problems))
