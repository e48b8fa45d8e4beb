"""A solve run's summary: accuracy with a 95% confidence interval, tokens per problem, why attempts stopped."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (good at small counts and near 0 or 1, where the normal one is not)."""
    if total <= 0:
        return None
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _accuracy(column: pd.Series) -> dict[str, Any]:
    """Correct over all problems (a failed or unjudged row counts as not correct), with its interval."""
    correct, total = int(column.fillna(False).astype(bool).sum()), len(column)
    return {"correct": correct, "accuracy": round(correct / total, 4) if total else None,
            "ci95": wilson_interval(correct, total)}


def solve_stats(rows: pd.DataFrame) -> dict[str, Any]:
    """The summary's numbers over a solved table (one row per problem)."""
    if rows.empty:
        return {"problems": 0}
    policy = rows["policy_tokens"].fillna(0).astype(int)
    verifier = rows["verifier_tokens"].fillna(0).astype(int)
    stats: dict[str, Any] = {"problems": len(rows), **_accuracy(rows["correct"]),
                             "errors": int(rows["error"].notna().sum()),
                             "stop_reasons": dict(Counter(rows["stop_reason"].dropna())),
                             "mean_iterations": round(float(rows["iterations"].fillna(0).mean()), 3),
                             "policy_tokens": int(policy.sum()), "verifier_tokens": int(verifier.sum()),
                             "verifier_calls": int(rows["verifier_calls"].fillna(0).sum()),
                             "tokens_per_problem": {"policy": round(float(policy.mean()), 1),
                                                    "verifier": round(float(verifier.mean()), 1),
                                                    "total": round(float((policy + verifier).mean()), 1)}}
    if "calculator_calls" in rows.columns:
        from stepdata.generation.calculator_decoding import calculator_summary

        summary = calculator_summary(list(rows["calculator_calls"]), list(rows["calculator_changed"]))
        if summary is not None:
            stats["calculator"] = summary
    for selection in ("verifier", "majority"):
        column = rows[f"correct_{selection}"]
        if column.notna().any() or rows[f"answer_{selection}"].notna().any():
            stats[f"by_{selection}"] = _accuracy(column)
    return stats
