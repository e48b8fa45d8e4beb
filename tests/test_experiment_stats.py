"""The experiment's statistics on cases whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stepdata.experiment.stats import (
    bootstrap_interval,
    compare,
    mcnemar_exact,
    paired_bootstrap,
    sign_flip_p,
)


def test_bootstrap_interval_of_two_problems_is_their_whole_range():
    # resampling [0, 1] gives the means 0, 0.5, 1 with chances 1/4, 1/2, 1/4: the middle 95% spans (0, 1)
    assert bootstrap_interval([0.0, 1.0], resamples=4000) == (0.0, 1.0)
    # all right or all wrong: no spread at all
    assert bootstrap_interval([1.0] * 30) == (1.0, 1.0)
    assert bootstrap_interval([0.0] * 30) == (0.0, 0.0)
    assert bootstrap_interval([]) is None


def test_bootstrap_interval_matches_the_normal_interval_on_many_problems():
    values = np.array([1.0] * 300 + [0.0] * 700)  # accuracy 0.3 on 1000 problems
    low, high = bootstrap_interval(values, resamples=4000, seed=3)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000)  # 0.0284
    assert low == pytest.approx(0.3 - half, abs=0.006) and high == pytest.approx(0.3 + half, abs=0.006)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)  # seeded: the same report twice


def test_a_missing_score_is_refused_not_dropped():
    with pytest.raises(ValueError, match="missing value"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap([1.0, 0.0], [1.0])


def test_mcnemar_exact_on_counts_worked_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # both tails of binomial(5, 1/2) at 0: 2 * 1/32
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)  # P(X <= 1) for n = 6 is 7/64
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_sign_flip_on_zero_one_scores_is_mcnemar_and_ignores_agreements():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0, 1, 1], dtype=float)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1], dtype=float)  # a alone solves 5, b alone none
    test = sign_flip_p(a - b)
    assert test["test"] == "mcnemar_exact" and test["only_first"] == 5 and test["only_second"] == 0
    assert test["p_value"] == pytest.approx(2 / 32)


def test_sign_flip_on_seed_averages_finds_a_consistent_shift_and_not_noise():
    diffs = np.full(60, 1 / 3)  # every problem one seed better out of three: as clear as it gets
    test = sign_flip_p(diffs, resamples=5000)
    assert test["test"] == "sign_flip" and test["p_value"] < 0.001
    balanced = np.array([1 / 3, -1 / 3] * 30)  # as many problems better as worse: mean 0, no evidence at all
    assert sign_flip_p(balanced, resamples=5000)["p_value"] == 1.0
    # 36 better, 24 worse, by a third each: the exact tail of binomial(60, 1/2) at 24 is about 0.15 (two-sided)
    leaning = np.array([1 / 3] * 36 + [-1 / 3] * 24)
    assert sign_flip_p(leaning, resamples=20000)["p_value"] == pytest.approx(2 * _tail(60, 24), abs=0.02)


def _tail(n: int, k: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def test_compare_says_when_a_difference_is_larger_than_its_interval():
    better = np.array([1.0] * 40 + [0.0] * 60)
    worse = np.array([0.0] * 40 + [0.0] * 60)
    result = compare(better, worse)
    assert result["difference"] == pytest.approx(0.4)
    assert result["ci95"][0] > 0 and result["beyond_interval"] is True and result["p_value"] < 1e-6
    same = compare(better, better)
    assert same["difference"] == 0 and same["beyond_interval"] is False and same["p_value"] == 1.0
    reversed_ = compare(worse, better)
    assert reversed_["ci95"][1] < 0 and reversed_["beyond_interval"] is True


def test_an_accuracy_where_every_problem_scored_alike_gets_the_wilson_interval_not_certainty():
    from stepdata.experiment.stats import accuracy_interval
    from stepdata.solve.stats import wilson_interval

    low, high = accuracy_interval([0.0] * 40)
    assert low == 0.0 and abs(high - wilson_interval(0, 40)[1]) < 1e-4 and high > 0.08
    low, high = accuracy_interval([1.0] * 40)
    assert high == 1.0 and low < 0.92
    assert accuracy_interval([0.0, 1.0] * 20, resamples=2000) == bootstrap_interval([0.0, 1.0] * 20, resamples=2000)
