"""The numbers at the top of a rollouts or localized audit, counted over every row of the table.

Like :mod:`stepdata.audit.summary` for pairs: the page may render only the first
rows, but the counts and plots describe the whole table. Outcomes are counted
with :func:`stepdata.audit.solution_html.outcome_of` (the sample stage's labels),
localizer statuses with the localized table's own ``status`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from stepdata.audit.solution_html import OUTCOMES, outcomes, statuses
from stepdata.audit.summary import Histogram, int_histogram
from stepdata.pairs.stats import value_counts
from stepdata.schema import LOCALIZE_STATUSES
from stepdata.steps import step_label

ACCURACY_BINS = ("0%", "1\u201324%", "25\u201349%", "50\u201374%", "75\u201399%", "100%")
CONFIDENCE_BINS = ("0\u20130.2", "0.2\u20130.4", "0.4\u20130.6", "0.6\u20130.8", "0.8\u20131")


@dataclass
class SolutionsSummary:
    """Counts over a whole rollouts or localized table (see :func:`summarize_solutions`)."""

    kind: str
    solutions: int
    problems: int
    by_outcome: dict[str, int]
    by_finish: dict[str, int]
    row_errors: int
    steps: Histogram
    accuracy_by_problem: Histogram
    by_status: dict[str, int] = field(default_factory=dict)
    by_method: dict[str, int] = field(default_factory=dict)
    localizer_calls: int = 0
    localizer_tokens: int = 0
    error_steps: Histogram = field(default_factory=lambda: Histogram([], {}))
    status_by_method: Histogram = field(default_factory=lambda: Histogram([], {}))
    confidence: Histogram = field(default_factory=lambda: Histogram([], {}))


def accuracy_bin(share: float) -> str:
    """The bar of :data:`ACCURACY_BINS` a problem's share of right solutions falls in."""
    if share <= 0:
        return ACCURACY_BINS[0]
    if share >= 1:
        return ACCURACY_BINS[-1]
    return ACCURACY_BINS[1 + min(int(share * 4), 3)]


def confidence_bin(value: float) -> str:
    """The bar of :data:`CONFIDENCE_BINS` a confidence in [0, 1] falls in (1.0 in the last)."""
    return CONFIDENCE_BINS[min(max(int(value * 5), 0), 4)]


def _accuracy_by_problem(df: pd.DataFrame, outcome: pd.Series) -> Histogram:
    judged = outcome.ne("not_judged")
    right = outcome.eq("right")[judged].groupby(df.loc[judged, "problem_id"]).mean()
    counts = {b: 0 for b in ACCURACY_BINS}
    for share in right:
        counts[accuracy_bin(float(share))] += 1
    return Histogram(list(ACCURACY_BINS), {"problems": list(counts.values())})


def _steps_histogram(df: pd.DataFrame) -> Histogram:
    lengths = [0 if s is None else len(s) for s in df["steps"]]
    starts, counts = int_histogram(lengths)
    width = starts[1] - starts[0] if len(starts) > 1 else 1
    labels = [str(s) if width == 1 else f"{s}\u2013{s + width - 1}" for s in starts]
    return Histogram(labels, {"solutions": counts})


def _error_step_histogram(steps: list[int | None], statuses: list[str]) -> Histogram:
    """Rows per first-error step (from 1), then the rows with no error, unknown and unfinished."""
    known = [s for s, st in zip(steps, statuses) if st == "error" and s is not None and s >= 0]
    starts, counts = int_histogram(known)
    width = starts[1] - starts[0] if len(starts) > 1 else 1
    labels = [step_label(s) if width == 1 else f"Steps {s + 1}\u2013{s + width}" for s in starts]
    for status, label in (("no_error", "no error"), ("unknown", "unknown"), ("unfinished", "unfinished")):
        count = statuses.count(status)
        if count:
            labels.append(label)
            counts.append(count)
    return Histogram(labels, {"rows": counts})


def summarize_solutions(df: pd.DataFrame, kind: str) -> SolutionsSummary:
    """Count what ``df`` (a rollouts or localized table, as ``kind`` says) holds."""
    outcome = outcomes(df)
    by_outcome = {OUTCOMES[o]: int(outcome.eq(o).sum()) for o in OUTCOMES if outcome.eq(o).any()}
    finish = df["finish_reason"] if "finish_reason" in df.columns else pd.Series([None] * len(df), dtype=object)
    summary = SolutionsSummary(
        kind=kind, solutions=len(df), problems=int(df["problem_id"].nunique()), by_outcome=by_outcome,
        by_finish=value_counts(finish, "(none)"),
        row_errors=int(df["error"].notna().sum()) if "error" in df.columns else 0,
        steps=_steps_histogram(df), accuracy_by_problem=_accuracy_by_problem(df, outcome))
    if kind != "localized":
        return summary
    status = statuses(df)
    step = pd.to_numeric(_numbers(df, "error_step"), errors="coerce")
    methods = df["method"].astype(object).where(df["method"].notna(), "none").astype(str) if "method" in df.columns \
        else pd.Series(["none"] * len(df), index=df.index)
    counts = status.value_counts()
    summary.by_status = {s: int(counts[s]) for s in LOCALIZE_STATUSES if s in counts.index}
    summary.by_method = value_counts(methods)
    summary.localizer_calls = int(pd.to_numeric(_numbers(df, "localizer_calls"), errors="coerce").fillna(0).sum())
    summary.localizer_tokens = int(pd.to_numeric(_numbers(df, "localizer_tokens"), errors="coerce").fillna(0).sum())
    summary.error_steps = _error_step_histogram([None if pd.isna(v) else int(v) for v in step], status.tolist())
    present = [s for s in LOCALIZE_STATUSES if s in counts.index]
    crossed = pd.crosstab(methods, status)
    summary.status_by_method = Histogram(present, {
        m: [int(crossed.at[m, s]) if s in crossed.columns else 0 for s in present] for m in summary.by_method})
    conf = pd.to_numeric(_numbers(df, "confidence"), errors="coerce")
    binned = conf.dropna().map(confidence_bin).value_counts()
    missing = int(conf.isna().sum())
    labels = list(CONFIDENCE_BINS) + (["none"] if missing else [])
    summary.confidence = Histogram(labels, {"rows": [int(binned.get(b, 0)) for b in CONFIDENCE_BINS]
                                            + ([missing] if missing else [])})
    return summary


def _numbers(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, or an all-null one when the table lacks it."""
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=float)
