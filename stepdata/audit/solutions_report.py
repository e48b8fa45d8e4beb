"""The audit page of a rollouts or localized table: its numbers, its plots and every solution.

The thing a researcher reads to decide whether a localizer can be trusted: for a
localized table, each wrong solution with its first error highlighted and the
localizer's evidence beside it; for a rollouts table, each solution and how it
ended. Counts and plots cover the whole table, the rendered solutions can be
capped (and the page says how many were left out), and the page filters itself
(by localizer, status, outcome, text) with the shared script of
:mod:`stepdata.audit.page`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stepdata.audit import theme
from stepdata.audit.kinds import TableKind, table_kind
from stepdata.audit.page import (
    counts_table,
    figures,
    filter_bar,
    html_page,
    left_out_note,
    made_by,
    metadata_html,
    percent,
    slug,
    stat,
)
from stepdata.audit.pair_html import esc
from stepdata.audit.solution_html import OUTCOMES, solution_block
from stepdata.audit.solutions import SolutionsSummary, summarize_solutions
from stepdata.audit.svg import bar_chart
from stepdata.schema import LOCALIZE_STATUSES

NOUN = "solutions"


def problems_index(problems: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Problems by id (the first row of an id listed twice), for the question and gold answer of each solution."""
    if problems is None:
        return {}
    missing = [c for c in ("problem_id", "question") if c not in problems.columns]
    if missing:
        raise ValueError(f"not a problems table: missing column(s) {missing}; columns are {list(problems.columns)}")
    return {str(r["problem_id"]): r for r in problems.drop_duplicates("problem_id").to_dict("records")}


def solution_blocks(df: pd.DataFrame, kind: str, problems: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The block of every row of ``df``, in table order."""
    index = problems or {}
    return [solution_block(row, kind == "localized", index.get(str(row.get("problem_id"))))
            for row in df.to_dict("records")]


def summary_html(summary: SolutionsSummary) -> str:
    """The summary numbers and the counts by outcome, finish reason (and, localized, status and method)."""
    right = summary.by_outcome.get(OUTCOMES["right"], 0)
    stats = [stat("solutions", str(summary.solutions), "solutions"),
             stat("problems", str(summary.problems), "problems"),
             stat("right_share", percent(right, summary.solutions), f"right ({right} of {summary.solutions})"),
             stat("row_errors", str(summary.row_errors), "rows with an error")]
    tables = [counts_table("outcome", summary.by_outcome, summary.solutions, NOUN),
              counts_table("finish reason", summary.by_finish, summary.solutions, NOUN)]
    if summary.kind == "localized":
        located = summary.by_status.get("error", 0)
        stats[2:2] = [stat("located_share", percent(located, summary.solutions),
                           f"first error located ({located} of {summary.solutions})"),
                      stat("localizer_cost", f"{summary.localizer_calls} / {summary.localizer_tokens}",
                           "localizer calls / tokens")]
        tables[0:0] = [counts_table("status", summary.by_status, summary.solutions, NOUN),
                       counts_table("method", summary.by_method, summary.solutions, NOUN)]
    return f'<div class="sd-stats">{"".join(stats)}</div><div>{"".join(tables)}</div>'


def plots_html(summary: SolutionsSummary) -> str:
    """Localized: first-error steps, statuses by method, confidence; rollouts: outcomes, accuracy by problem;
    both: steps per solution."""
    steps = bar_chart("Steps per solution", summary.steps.labels,
                      [("solutions", theme.NEUTRAL, summary.steps.series["solutions"])], "steps", NOUN)
    if summary.kind == "localized":
        errors = bar_chart("First error step", summary.error_steps.labels,
                           [("rows", theme.REJECTED, summary.error_steps.series["rows"])],
                           "first wrong step (shown from 1)", NOUN)
        methods = list(summary.status_by_method.series)
        by_method = bar_chart("Status by method", summary.status_by_method.labels,
                              [(m, theme.PALETTE[i % len(theme.PALETTE)], summary.status_by_method.series[m])
                               for i, m in enumerate(methods)], "status", NOUN)
        confidence = bar_chart("Confidence", summary.confidence.labels,
                               [("rows", theme.NEUTRAL, summary.confidence.series["rows"])], "localizer confidence",
                               NOUN)
        return figures([("error_step", errors), ("status_by_method", by_method), ("confidence", confidence),
                        ("steps", steps)])
    outcome = bar_chart("Outcomes", list(summary.by_outcome), [("solutions", theme.NEUTRAL,
                                                                list(summary.by_outcome.values()))], "outcome", NOUN)
    accuracy = bar_chart("Accuracy by problem", summary.accuracy_by_problem.labels,
                         [("problems", theme.CHOSEN, summary.accuracy_by_problem.series["problems"])],
                         "share of a problem's solutions that are right", "problems")
    return figures([("outcome", outcome), ("accuracy_by_problem", accuracy), ("steps", steps)])


def _filter_html(summary: SolutionsSummary) -> str:
    selects = []
    if summary.kind == "localized":
        selects += [("method", "all methods", [(slug(m), m) for m in summary.by_method]),
                    ("status", "all statuses", [(s, s.replace("_", " ")) for s in LOCALIZE_STATUSES
                                                if s in summary.by_status])]
    present = {label for label in summary.by_outcome}
    selects.append(("outcome", "all outcomes", [(o, label) for o, label in OUTCOMES.items() if label in present]))
    selects.append(("finish", "all finish reasons", [(f, f) for f in summary.by_finish if f != "(none)"]))
    return filter_bar("article.sd-solution", NOUN, selects, placeholder="filter: text, rollout_id, claim...")


def render_solutions_report(df: pd.DataFrame, title: str | None = None, max_solutions: int | None = None,
                            found: TableKind | None = None, problems: pd.DataFrame | None = None) -> str:
    """One self-contained HTML page auditing a rollouts or localized table (see the module doc).

    ``problems`` (a problems table) adds each solution's question and gold answer;
    ``max_solutions`` renders only the first rows and says how many were left out.
    """
    if max_solutions is not None and max_solutions < 0:
        raise ValueError(f"max_solutions must be >= 0 or None, got {max_solutions}")
    found = found or table_kind(df)
    if found.kind not in ("rollouts", "localized"):
        raise ValueError(f"render_solutions_report shows rollouts and localized tables, not {found.kind}")
    summary = summarize_solutions(df, found.kind)
    shown = df if max_solutions is None else df.head(max_solutions)
    note = left_out_note(len(shown), len(df), f"max_solutions={max_solutions}", NOUN)
    guessed = f'<p class="sd-note" data-kind-source="columns">{esc(found.note)}</p>' if found.note else ""
    blocks = "\n".join(solution_blocks(shown, found.kind, problems_index(problems)))
    what = ("wrong solutions with the first error each localizer found" if found.kind == "localized"
            else "sampled solutions")
    return html_page(title or f"stepdata {found.kind} audit", (
        f'<p class="sd-muted" data-kind="{esc(found.kind)}">A {esc(found.kind)} table: {len(df)} {what}, from '
        f"{summary.problems} problems. Steps are numbered from 1 here"
        f"{' (error_step k in the data is Step k+1)' if found.kind == 'localized' else ''}. "
        f"{made_by()}</p>{guessed}"
        f"<h2>Summary</h2>{summary_html(summary)}{plots_html(summary)}"
        f"{metadata_html(dict(df.attrs.get('stepdata') or {}))}"
        f"<h2>Solutions</h2>{note}{_filter_html(summary)}\n{blocks}\n{note}"
    ))
