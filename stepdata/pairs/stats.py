"""Summary statistics of a pairs table, as a dict (for JSON) and as a plain text table.

A preference set can look large and still be thin: most pairs from a few
problems, all errors at step 1, chosen steps never verified, or half the rows
removed as duplicates. :func:`pairs_stats` reports exactly these things so they
are seen before training, and :func:`render_stats` prints them for a terminal.

Error steps are 0-based in data (-1 = no error, "null" = unknown); the text
table shows them as "Step k" counted from 1, as the rest of the toolkit does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _counts(values: Iterable[Any], null_label: str = "null") -> dict[str, int]:
    """Counts by value (as text), largest first, ties by name; null counted under ``null_label``."""
    counter = Counter(null_label if _missing(v) else str(v) for v in values)
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _distribution(values: list[float]) -> dict[str, float | int | None]:
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


def _error_step_histogram(values: Iterable[Any]) -> dict[str, int]:
    """Pairs per error step (0-based key), numeric order, then "null" for unknown."""
    counter: Counter[int] = Counter()
    unknown = 0
    for value in values:
        if _missing(value):
            unknown += 1
        else:
            counter[int(value)] += 1
    histogram = {str(step): counter[step] for step in sorted(counter)}
    if unknown:
        histogram["null"] = unknown
    return histogram


def _flag_shares(values: Iterable[Any]) -> dict[str, Any]:
    """Counts and shares of True / False / null in a nullable bool column."""
    items = ["null" if _missing(v) else ("true" if bool(v) else "false") for v in values]
    total = len(items)
    counts = {key: items.count(key) for key in ("true", "false", "null")}
    shares = {key: (round(n / total, 4) if total else None) for key, n in counts.items()}
    return {"counts": counts, "shares": shares}


def _dropped_stats(dropped: pd.DataFrame | None) -> dict[str, Any]:
    """Dropped rows by filter (in the order the filters run) and, within each filter, by reason."""
    if dropped is None or not len(dropped):
        return {"total": 0, "by_filter": {}, "by_reason": {}}
    from stepdata.pairs.filters import FILTER_ORDER

    counts = _counts(dropped["drop_filter"])
    rank = {name: i for i, name in enumerate(FILTER_ORDER)}
    by_filter = dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    by_reason: dict[str, dict[str, int]] = {}
    for name in by_filter:
        by_reason[name] = _counts(dropped.loc[dropped["drop_filter"] == name, "drop_reason"])
    return {"total": len(dropped), "by_filter": by_filter, "by_reason": by_reason}


def pairs_stats(df: pd.DataFrame, dropped: pd.DataFrame | None = None) -> dict[str, Any]:
    """Statistics of the pairs in ``df`` and of the rows the filters removed (``dropped``, from
    :mod:`stepdata.pairs.filters`). Every value is JSON-serialisable."""
    per_problem = df.groupby("problem_id", sort=False).size().tolist() if len(df) else []
    chosen = [len(t) if isinstance(t, str) else 0 for t in df["chosen"]]
    rejected = [len(t) if isinstance(t, str) else 0 for t in df["rejected"]]
    return {
        "pairs": len(df),
        "problems": int(df["problem_id"].nunique()) if len(df) else 0,
        "by_kind": _counts(df["kind"]),
        "by_source": _counts(df["source"]) if "source" in df.columns else {},
        "error_step_histogram": _error_step_histogram(df["error_step"]),
        "pairs_per_problem": {
            **_distribution(per_problem),
            "histogram": {str(k): v for k, v in sorted(Counter(per_problem).items())},
        },
        "chosen_chars": _distribution(chosen),
        "rejected_chars": _distribution(rejected),
        "chosen_verified": _flag_shares(df["chosen_verified"]),
        "chosen_ends_solution": _flag_shares(df["chosen_ends_solution"]),
        "rejected_ends_solution": _flag_shares(df["rejected_ends_solution"]),
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
