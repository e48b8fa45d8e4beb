"""The statistics an experiment's table needs: intervals over problems and paired tests between arms.

Every arm is scored on the same problems, so the question "is arm A better than
arm B" is a paired one: the per-problem differences carry it, and the spread of
problems both get right (or both miss) cancels. Three tools, each with cases
whose answers can be worked out by hand (``tests/test_experiment_stats.py``):

- :func:`bootstrap_interval`: a percentile bootstrap over problems of a mean
  (an accuracy, or the mean of per-problem scores averaged over training seeds);
- :func:`paired_bootstrap`: the same for the mean per-problem difference of two arms;
- :func:`mcnemar_exact` and :func:`sign_flip_p`: a two-sided p-value for "no
  difference". On 0/1 scores the sign-flip test *is* McNemar's exact test (the
  discordant problems' signs are fair coins), so it is computed exactly; on scores
  averaged over seeds (1/3, 2/3, ...) it is a Monte-Carlo sign-flip test.

Resampling is seeded, so a report computed twice from the same rows is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per problem (a flat sequence), got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} holds a missing value (NaN): score every problem, counting a failure as 0")
    return array


def bootstrap_interval(values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (one per problem); None when there are none.

    Problems are drawn with replacement ``resamples`` times; the interval holds the middle
    ``level`` of the resampled means (for [0, 1]: the means 0, 0.5, 1 come with chances 1/4,
    1/2, 1/4, so the 95% interval is (0, 1)).
    """
    array = _array(values, "values")
    if not len(array):
        return None
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(resamples, len(array)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return round(float(low), 4), round(float(high), 4)


def accuracy_interval(scores: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES,
                      seed: int = 0) -> tuple[float, float] | None:
    """95% interval of an accuracy from per-problem scores in [0, 1]: the bootstrap over problems, except where
    every problem scored the same 0 or 1. There the bootstrap never draws a difference and would claim (0, 0)
    or (1, 1), certainty that 40 problems cannot give; the Wilson interval of 0 (or n) of n is given instead."""
    array = _array(scores, "scores")
    if len(array) and (np.all(array == 0.0) or np.all(array == 1.0)):
        from stepdata.solve.stats import wilson_interval

        low, high = wilson_interval(int(array.sum()), len(array))
        return round(float(low), 4), round(float(high), 4)
    return bootstrap_interval(array, resamples=resamples, seed=seed)


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                     resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """Mean per-problem difference ``a - b`` and its bootstrap interval (the same problems resampled for both)."""
    first, second = _array(a, "a"), _array(b, "b")
    if len(first) != len(second):
        raise ValueError(f"paired scores need the same problems: {len(first)} against {len(second)}")
    diffs = first - second
    return {"difference": round(float(diffs.mean()), 4) if len(diffs) else None,
            "ci95": bootstrap_interval(diffs, resamples=resamples, seed=seed, level=level)}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` problems only the first arm solves, ``c`` only the second.

    Under "no difference" each discordant problem goes either way with chance 1/2, so the
    smaller count is binomial(b + c, 1/2); the p-value doubles its tail (at most 1). With
    no discordant problem there is no evidence either way: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def sign_flip_p(diffs: Sequence[float] | np.ndarray, *, resamples: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Two-sided p-value of "the mean difference is 0" by flipping the sign of each problem's difference.

    0/1 scores (differences in -1, 0, 1): exact, as McNemar's test on the discordant counts.
    Other scores: Monte Carlo with ``resamples`` random sign vectors, the observed one counted
    among them (so p is never 0).
    """
    array = _array(diffs, "diffs")
    if np.isin(array, (-1.0, 0.0, 1.0)).all():
        b, c = int((array > 0).sum()), int((array < 0).sum())
        return {"test": "mcnemar_exact", "p_value": round(mcnemar_exact(b, c), 6), "only_first": b, "only_second": c}
    observed = abs(array.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, len(array)))
    flipped = np.abs((signs * array).mean(axis=1))
    p = (1 + int((flipped >= observed - 1e-12).sum())) / (resamples + 1)
    return {"test": "sign_flip", "p_value": round(p, 6), "resamples": resamples}


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES,
            seed: int = 0) -> dict[str, Any]:
    """Arm ``a`` against arm ``b`` on the same problems: the difference, its interval, the paired test, and
    ``beyond_interval`` (the interval excludes 0: the difference is larger than its uncertainty)."""
    result = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    result |= sign_flip_p(_array(a, "a") - _array(b, "b"), seed=seed)
    low_high = result["ci95"]
    result["beyond_interval"] = bool(low_high and (low_high[0] > 0 or low_high[1] < 0))
    return result
