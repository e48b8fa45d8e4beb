"""Summary statistics of a pairs table: the one place where pairs are counted.

A preference set can look large and still be thin: most pairs from a few
problems, all errors at step 1, chosen steps never verified, or half the rows
removed as duplicates. :func:`pairs_stats` reports exactly these things so they
are seen before training, and :func:`render_stats` prints them for a terminal.

Every count of pairs elsewhere (the pair stages' summaries, the quickstart's
summary, the audit page's numbers and plots) is taken with the functions here,
so the same table gives the same numbers everywhere: :func:`pairs_by_kind`,
:func:`chosen_verified_counts`, :func:`chosen_confirmed`, :func:`value_counts`,
:func:`problem_count`, :func:`problem_sizes`, :func:`text_lengths`,
:func:`error_steps` and :func:`distribution`. They are vectorised (a table of a
million pairs is fine) and tolerate a missing optional column (read as all null).

Error steps are 0-based in data (-1 = no error, "null" = unknown); the text
table shows them as "Step k" counted from 1, as the rest of the toolkit does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of ``df``, or an all-null column when the frame lacks it."""
    if name in df.columns:
        return df[name]
    return pd.Series([None] * len(df), index=df.index, dtype=object)


def value_counts(values: pd.Series | Iterable[Any], null_label: str = "null") -> dict[str, int]:
    """Counts by value (as text), largest first, ties by name; nulls counted under ``null_label``."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    labelled = series.astype(object).where(series.notna(), null_label).astype(str)
    counts = labelled.value_counts(sort=False)
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def pairs_by_kind(pairs: pd.DataFrame, *, null_label: str = "null") -> dict[str, int]:
    """Pairs per kind (step-dpo / scdpo / dpo), largest first; a null kind counted under ``null_label``."""
    return value_counts(column(pairs, "kind"), null_label)


def _flag_counts(values: pd.Series) -> dict[str, int]:
    """How many cells of a nullable bool column are true, false (any other non-null value, as bool()) and null."""
    known = values[values.notna()].astype(bool)
    true = int(known.sum())
    return {"true": true, "false": len(known) - true, "null": len(values) - len(known)}


def chosen_verified_counts(pairs: pd.DataFrame) -> dict[str, int]:
    """``{"true", "false", "unchecked"}``: pairs whose chosen side passed its check, failed it, was not checked."""
    counts = _flag_counts(column(pairs, "chosen_verified"))
    return {"true": counts["true"], "false": counts["false"], "unchecked": counts["null"]}


def chosen_confirmed(pairs: pd.DataFrame) -> dict[str, Any]:
    """Over the step pairs only (kind != "dpo"; a whole-solution DPO pair has no step to check):
    ``{"confirmed", "rejected", "unchecked", "of", "share"}``, where ``share`` is confirmed / of
    (None when there are no step pairs)."""
    step_pairs = pairs[column(pairs, "kind") != "dpo"]
    counts = chosen_verified_counts(step_pairs)
    of = len(step_pairs)
    return {"confirmed": counts["true"], "rejected": counts["false"], "unchecked": counts["unchecked"],
            "of": of, "share": counts["true"] / of if of else None}


def problem_count(pairs: pd.DataFrame) -> int:
    """Distinct problems (a null problem_id is not a problem)."""
    return int(column(pairs, "problem_id").nunique(dropna=True))


def problem_sizes(pairs: pd.DataFrame) -> list[int]:
    """Pairs of each problem, one number per problem (largest first; null problem_ids left out)."""
    return [int(n) for n in column(pairs, "problem_id").value_counts(dropna=True).tolist()]


def text_lengths(values: pd.Series) -> list[int]:
    """Length in characters of each text cell (a null cell counts 0)."""
    return [int(n) for n in values.astype(object).where(values.notna(), "").astype(str).str.len().tolist()]


def error_steps(values: pd.Series) -> list[int | None]:
    """Each error step as an int (0-based, -1 = no error), None where unknown (null or not a number)."""
    numbers = pd.to_numeric(values.astype(object), errors="coerce")
    return [None if pd.isna(n) else int(n) for n in numbers.tolist()]


def distribution(values: list[float]) -> dict[str, float | int | None]:
    """min / median / mean / p90 / max of ``values`` (None when there are none)."""
    if not values:
        return {"min": None, "median": None, "mean": None, "p90": None, "max": None}
    series = pd.Series(values, dtype="float64")
    return {
        "min": int(series.min()),
        "median": float(series.median()),
        "mean": round(float(series.mean()), 2),
        "p90": float(series.quantile(0.9)),
        "max": int(series.max()),
    }


def _error_step_histogram(values: pd.Series) -> dict[str, int]:
    """Pairs per error step (0-based key), numeric order, then "null" for unknown."""
    steps = error_steps(values)
    counter = Counter(s for s in steps if s is not None)
    histogram = {str(step): counter[step] for step in sorted(counter)}
    unknown = steps.count(None)
    if unknown:
        histogram["null"] = unknown
    return histogram


def _flag_shares(values: pd.Series) -> dict[str, Any]:
    """Counts and shares of True / False / null in a nullable bool column."""
    counts = _flag_counts(values)
    total = len(values)
    shares = {key: (round(n / total, 4) if total else None) for key, n in counts.items()}
    return {"counts": counts, "shares": shares}


def _dropped_stats(dropped: pd.DataFrame | None) -> dict[str, Any]:
    """Dropped rows by filter (in the order the filters run) and, within each filter, by reason."""
    if dropped is None or not len(dropped):
        return {"total": 0, "by_filter": {}, "by_reason": {}}
    from stepdata.pairs.filters import FILTER_ORDER

    counts = value_counts(dropped["drop_filter"])
    rank = {name: i for i, name in enumerate(FILTER_ORDER)}
    by_filter = dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    by_reason: dict[str, dict[str, int]] = {}
    for name in by_filter:
        by_reason[name] = value_counts(dropped.loc[dropped["drop_filter"] == name, "drop_reason"])
    return {"total": len(dropped), "by_filter": by_filter, "by_reason": by_reason}


def pairs_stats(df: pd.DataFrame, dropped: pd.DataFrame | None = None) -> dict[str, Any]:
    """Statistics of the pairs in ``df`` and of the rows the filters removed (``dropped``, from
    :mod:`stepdata.pairs.filters`). Every value is JSON-serialisable."""
    per_problem = problem_sizes(df)
    return {
        "pairs": len(df),
        "problems": problem_count(df),
        "by_kind": pairs_by_kind(df),
        "by_source": value_counts(df["source"]) if "source" in df.columns else {},
        "by_chosen_source": value_counts(column(df, "chosen_source")),
        "error_step_histogram": _error_step_histogram(column(df, "error_step")),
        "pairs_per_problem": {
            **distribution(per_problem),
            "histogram": {str(k): v for k, v in sorted(Counter(per_problem).items())},
        },
        "chosen_chars": distribution(text_lengths(column(df, "chosen"))),
        "rejected_chars": distribution(text_lengths(column(df, "rejected"))),
        "chosen_verified": _flag_shares(column(df, "chosen_verified")),
        "chosen_ends_solution": _flag_shares(column(df, "chosen_ends_solution")),
        "rejected_ends_solution": _flag_shares(column(df, "rejected_ends_solution")),
        "dropped": _dropped_stats(dropped),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:.2f}"
    return str(value)


def _step_label(key: str) -> str:
    if key == "null":
        return "unknown"
    step = int(key)
    return "no error (-1)" if step == -1 else f"Step {step + 1} (error_step={step})"


def render_stats(stats: dict[str, Any]) -> str:
    """The stats as an aligned plain-text table (one section per block)."""
    rows: list[tuple[str, str, str]] = []  # (section, label, value)

    def add(section: str, label: str, value: Any) -> None:
        rows.append((section, label, _fmt(value)))

    total = stats["pairs"]

    def with_share(n: int) -> str:
        return f"{n} ({n / total:.1%})" if total else str(n)

    add("pairs", "total", stats["pairs"])
    add("pairs", "problems", stats["problems"])
    for kind, n in stats["by_kind"].items():
        add("by kind", kind, with_share(n))
    for source, n in stats["by_source"].items():
        add("by source", source, with_share(n))
    for source, n in stats.get("by_chosen_source", {}).items():
        add("chosen written by", source, with_share(n))
    for key, n in stats["error_step_histogram"].items():
        add("error step", _step_label(key), with_share(n))
    ppp = stats["pairs_per_problem"]
    add("pairs per problem", "min / median / mean / max",
        " / ".join(_fmt(ppp[k]) for k in ("min", "median", "mean", "max")))
    for count, n in ppp["histogram"].items():
        add("pairs per problem", f"{count} pair(s)", f"{n} problem(s)")
    for side in ("chosen", "rejected"):
        dist = stats[f"{side}_chars"]
        add("length (chars)", side + " min / median / mean / p90 / max",
            " / ".join(_fmt(dist[k]) for k in ("min", "median", "mean", "p90", "max")))
    for column in ("chosen_verified", "chosen_ends_solution", "rejected_ends_solution"):
        flags = stats[column]
        add("flags", column, "  ".join(
            f"{key} {flags['counts'][key]}" + (f" ({flags['shares'][key]:.1%})" if flags["shares"][key] is not None else "")
            for key in ("true", "false", "null")))
    dropped = stats["dropped"]
    add("dropped", "total", dropped["total"])
    for name, n in dropped["by_filter"].items():
        add("dropped", name, n)
        for reason, m in dropped["by_reason"].get(name, {}).items():
            add("dropped", f"  {reason}", m)

    label_width = max(len(label) for _, label, _ in rows)
    lines: list[str] = []
    section = None
    for sec, label, value in rows:
        if sec != section:
            lines.append(f"{sec}:")
            section = sec
        lines.append(f"  {label:<{label_width}}  {value}")
    return "\n".join(lines)
