"""The numbers at the top of an audit: what a pairs table holds, counted over all its rows.

Computed on the whole table (vectorised, so a table of a million pairs is
fine) even when the report shows only the first ``max_pairs`` pairs: the
summary must describe the data set, not the page. Every number is counted by
:mod:`stepdata.pairs.stats` (the one place pairs are counted); this module only
chooses the labels and bins the values into bars for the plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from stepdata.audit.fields import error_step_label
from stepdata.pairs.stats import (
    chosen_verified_counts,
    column,
    distribution,
    error_steps,
    pairs_by_kind,
    problem_count,
    problem_sizes,
    text_lengths,
    value_counts,
)

REQUIRED_COLUMNS = ("pair_id", "question", "chosen", "rejected")


def check_columns(df: pd.DataFrame) -> None:
    """Refuse a frame that cannot be a pairs table, naming the missing columns.

    Only the columns a pair cannot be shown without are required; the others
    (source, error_step, chosen_verified, ...) are shown as missing when absent.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a pairs table: missing column(s) {missing}; columns are {list(df.columns)}")


@dataclass
class Histogram:
    """Bars to draw: one label per bar and one list of counts per series."""

    labels: list[str]
    series: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class PairsSummary:
    """Counts over a whole pairs table (see :func:`summarize`)."""

    pairs: int
    problems: int
    by_kind: dict[str, int]
    by_source: dict[str, int]
    verified: int  # chosen_verified is True
    failed_check: int  # chosen_verified is False
    unchecked: int  # chosen_verified is null
    median_chosen_chars: float | None
    median_rejected_chars: float | None
    error_steps: Histogram
    pairs_per_problem: Histogram
    lengths: Histogram

    @property
    def verified_share(self) -> float | None:
        """Share of all pairs whose chosen side passed a checker (None for an empty table)."""
        return self.verified / self.pairs if self.pairs else None


def _nice_step(span: float, target_bins: int) -> int:
    """A round bin width (1, 2, 5 x 10^k) giving about ``target_bins`` bins over ``span``."""
    raw = max(span / max(target_bins, 1), 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def int_histogram(values: Sequence[int], max_bars: int = 30) -> tuple[list[int], list[int]]:
    """Bin starts and counts for integers: one bar per value, or round ranges when there are too many."""
    if not len(values):
        return [], []
    lo, hi = min(values), max(values)
    width = 1 if hi - lo + 1 <= max_bars else _nice_step(hi - lo + 1, max_bars)
    first = (lo // width) * width
    starts = list(range(first, hi + 1, width))
    counts = [0] * len(starts)
    for v in values:
        counts[(v - first) // width] += 1
    return starts, counts


def _range_label(start: int, width: int) -> str:
    return str(start) if width == 1 else f"{start}\u2013{start + width - 1}"


def _error_step_histogram(df: pd.DataFrame) -> Histogram:
    """Pairs per error step, shown as "Step k+1"; every step between the first and last gets a bar."""
    steps = error_steps(column(df, "error_step"))
    known = [s for s in steps if s is not None and s >= 0]
    starts, counts = int_histogram(known)
    width = starts[1] - starts[0] if len(starts) > 1 else 1
    if width == 1:
        labels = [error_step_label(s) for s in starts]
    else:
        labels = [f"Steps {s + 1}\u2013{s + width}" for s in starts]
    for label, count in (("no error", sum(1 for s in steps if s is not None and s < 0)),
                         ("unknown", sum(1 for s in steps if s is None))):
        if count:
            labels.append(label)
            counts.append(count)
    return Histogram(labels, {"pairs": counts})


def _pairs_per_problem_histogram(df: pd.DataFrame) -> Histogram:
    """How many problems have 1, 2, 3, ... pairs (a few problems dominating shows up here)."""
    starts, counts = int_histogram(problem_sizes(df))
    width = starts[1] - starts[0] if len(starts) > 1 else 1
    return Histogram([_range_label(s, width) for s in starts], {"problems": counts})


def _length_histogram(chosen: list[int], rejected: list[int], target_bins: int = 20) -> Histogram:
    """Chosen and rejected lengths (characters) over the same bins, to compare their distributions."""
    values = chosen + rejected
    if not values:
        return Histogram([], {"chosen": [], "rejected": []})
    lo, hi = min(values), max(values)
    width = _nice_step(hi - lo + 1, target_bins)
    first = (lo // width) * width
    bins = (hi - first) // width + 1
    series = {}
    for name, lengths in (("chosen", chosen), ("rejected", rejected)):
        counts = [0] * bins
        for v in lengths:
            counts[(v - first) // width] += 1
        series[name] = counts
    labels = [_range_label(first + i * width, width) for i in range(bins)]
    return Histogram(labels, series)


def summarize(df: pd.DataFrame) -> PairsSummary:
    """Count what ``df`` (a pairs table) holds: pairs, problems, kinds, sources, checks, lengths."""
    check_columns(df)
    checks = chosen_verified_counts(df)
    chosen_len, rejected_len = text_lengths(df["chosen"]), text_lengths(df["rejected"])
    return PairsSummary(
        pairs=len(df),
        problems=problem_count(df),
        by_kind=pairs_by_kind(df, null_label="(none)"),
        by_source=value_counts(column(df, "source"), "(unknown)"),
        verified=checks["true"],
        failed_check=checks["false"],
        unchecked=checks["unchecked"],
        median_chosen_chars=distribution(chosen_len)["median"],
        median_rejected_chars=distribution(rejected_len)["median"],
        error_steps=_error_step_histogram(df),
        pairs_per_problem=_pairs_per_problem_histogram(df),
        lengths=_length_histogram(chosen_len, rejected_len),
    )
