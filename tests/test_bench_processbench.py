"""ProcessBench scoring: a localizer with no prediction is wrong on both subsets (never a free "-1")."""

from __future__ import annotations

import pytest

from stepdata.bench.processbench import run_processbench
from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize import make_localizer


class UnreadableJudge(Generator):
    """A judge that never boxes an index (a wrong template, a model that rambles)."""

    backend = "scripted"

    def _generate(self, requests, sampling, progress, stats):
        return [GenerationResult(r.request_id, "prompt", 50,
                                 [Completion("Hmm, hard to say.", "stop", 5) for _ in range(sampling.n)])
                for r in requests]


def test_an_unreadable_judge_scores_zero_on_correct_samples(shared_data):
    localizer = make_localizer("judge", generator=UnreadableJudge("judge"), votes=3)
    result = run_processbench("gsm8k", localizer, data_dir=shared_data, limit=10)
    assert (result.erroneous, result.correct) == (5, 5)
    assert result.acc_correct == 0.0 and result.acc_erroneous == 0.0 and result.f1 == 0.0
    assert result.unreadable == 30 and result.no_verdict == 10


def test_rules_then_an_unreadable_judge_keeps_only_the_rules_answers(shared_data):
    predictions: list[dict] = []
    localizer = make_localizer("rules+judge", generator=UnreadableJudge("judge"), votes=2)
    result = run_processbench("gsm8k", localizer, data_dir=shared_data, limit=40, predictions=predictions)
    from_rules = [p for p in predictions if p["predicted"] is not None]
    assert all(p["predicted"] >= 0 for p in from_rules), "the rules answer only where they find a false claim"
    assert result.acc_correct == 0.0  # nothing says "no error": the judge was never read
    assert result.no_verdict == len(predictions) - len(from_rules) > 0


@pytest.mark.parametrize("subset", ["gsm8k", "math"])
def test_rules_no_false_claim_is_a_real_minus_one(shared_data, subset):
    predictions: list[dict] = []
    result = run_processbench(subset, make_localizer("rules"), data_dir=shared_data, limit=20, predictions=predictions)
    assert result.no_verdict == 0
    assert all(p["predicted"] is not None for p in predictions)
    assert result.acc_correct >= 0.9
