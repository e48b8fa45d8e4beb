"""ProcessBench's arithmetic: accuracies, F1, their average over subsets, and a threshold sweep.

Pure functions over (label, prediction) and (label, step scores) records, so the
numbers are tested without a model. A prediction is a step index, -1 ("no error")
or None (no prediction: wrong whatever the label, never read as "no error").

Accuracy on erroneous samples counts exact indices; accuracy on correct samples
counts -1 answers; F1 is their harmonic mean, and a run over several subsets
reports the plain mean of the subsets' F1 (ProcessBench's "Avg. F1").

A score-based localizer (a PRM) leaves ``step_scores`` in its evidence: one P(good)
in [0, 1] per step. Its prediction at threshold t is the first step scoring below t,
else -1 (:func:`~stepdata.localize.base.first_below`, the rule the localizer ran), so :func:`sweep` recomputes every subset's F1 at other
thresholds without scoring again. Samples without scores (another localizer of a
fallback answered them, or none did) keep the prediction they had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stepdata.localize.base import first_below

# --sweep without values: 0.05 to 0.95 in steps of 0.05
DEFAULT_SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))

SWEEP_WARNING = ("warning: a threshold chosen on these samples flatters the result (it was fitted to the test "
                 "set); choose the threshold on held-out data and report the score at that threshold")


@dataclass(frozen=True)
class Score:
    """One subset's scores (accuracies and F1 as fractions)."""

    erroneous: int
    correct: int
    acc_erroneous: float
    acc_correct: float
    f1: float


def f1_of(acc_erroneous: float, acc_correct: float) -> float:
    """The harmonic mean of the two accuracies (0 when both are 0)."""
    total = acc_erroneous + acc_correct
    return 2 * acc_erroneous * acc_correct / total if total else 0.0


def score(pairs: Iterable[tuple[int, int | None]]) -> Score:
    """Scores of (label, prediction) pairs: a None prediction is wrong on both sides."""
    right_err = n_err = right_ok = n_ok = 0
    for label, predicted in pairs:
        if label == -1:
            n_ok += 1
            right_ok += predicted == -1
        else:
            n_err += 1
            right_err += predicted is not None and predicted == label
    acc_err = right_err / n_err if n_err else 0.0
    acc_ok = right_ok / n_ok if n_ok else 0.0
    return Score(n_err, n_ok, acc_err, acc_ok, f1_of(acc_err, acc_ok))


def average_f1(f1s: Sequence[float]) -> float:
    """ProcessBench's "Avg. F1": the plain mean of the subsets' F1 (each subset counts once, whatever its size)."""
    return sum(f1s) / len(f1s) if f1s else 0.0


def checked_scores(value: Any, where: str) -> list[float] | None:
    """``value`` as a list of step scores in [0, 1], None when absent; anything else is a ValueError naming ``where``."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: step_scores must be a list of numbers in [0, 1], found {type(value).__name__}")
    scores = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or math.isnan(item) or not 0 <= item <= 1:
            raise ValueError(f"{where}: step_scores[{i}] must be a number in [0, 1], found {item!r}")
        scores.append(float(item))
    return scores




@dataclass(frozen=True)
class SweepRow:
    """Scores at one threshold: per subset (in the order first seen) and their average F1."""

    threshold: float
    subsets: dict[str, Score]
    average_f1: float


def sweep(records: Iterable[dict[str, Any]], thresholds: Sequence[float]) -> list[SweepRow]:
    """Each threshold's per-subset scores, from records of ``subset``, ``label``, ``predicted`` and ``step_scores``.

    A record with ``step_scores`` is predicted at each threshold by :func:`~stepdata.localize.base.first_below`, the rule the localizer ran;
    one without keeps its ``predicted``. Scores out of [0, 1] are a ValueError naming
    the record's ``id``.
    """
    prepared = [(r["subset"], r["label"], r.get("predicted"),
                 checked_scores(r.get("step_scores"), f"sample {r.get('id')!r} of {r['subset']}")) for r in records]
    for threshold in thresholds:
        if not 0 <= threshold <= 1:
            raise ValueError(f"sweep threshold {threshold} is not in [0, 1]")
    rows = []
    for threshold in thresholds:
        pairs: dict[str, list[tuple[int, int | None]]] = {}
        for subset, label, predicted, scores in prepared:
            pairs.setdefault(subset, []).append((label, first_below(scores, threshold) if scores is not None else predicted))
        scored = {subset: score(found) for subset, found in pairs.items()}
        rows.append(SweepRow(threshold, scored, average_f1([s.f1 for s in scored.values()])))
    return rows


def has_step_scores(records: Iterable[dict[str, Any]]) -> bool:
    """Whether any record carries step scores (whether a sweep means anything)."""
    return any(r.get("step_scores") is not None for r in records)


def sweep_table(rows: Sequence[SweepRow], operating: float | None = None) -> str:
    """The sweep as a table: threshold, each subset's F1, the average F1; the operating point and the best marked."""
    if not rows:
        return ""
    widths = {subset: max(len(subset) + 3, 7) for subset in rows[0].subsets}
    best = max(rows, key=lambda r: r.average_f1).threshold  # the first of equals
    lines = ["| threshold | " + " | ".join(f"{s + ' F1':>{w}}" for s, w in widths.items()) + " | avg. F1 |",
             "|-----------|" + "|".join("-" * (w + 2) for w in widths.values()) + "|---------|"]
    for row in rows:
        cells = " | ".join(f"{100 * row.subsets[s].f1:{w}.1f}" for s, w in widths.items())
        marks = ("  <- operating point" if operating is not None and math.isclose(row.threshold, operating) else "")
        marks += "  <- best here" if row.threshold == best else ""
        lines.append(f"| {row.threshold:9.2f} | {cells} | {100 * row.average_f1:7.1f} |{marks}")
    return "\n".join(lines)
