"""The answer policy and SCDPO's divergence step, unit by unit (stage-level tests: test_labels.py)."""

from __future__ import annotations

import pytest

from stepdata.answers import AnswerPolicy, count_outcomes
from stepdata.pipeline.synthesize import first_divergence


@pytest.mark.parametrize("text", [" I am not sure.\nStep 5: Let me", "Step 2: 7 * 2 =", "we get 12 apples"])
def test_model_text_states_an_answer_only_explicitly(text):
    assert AnswerPolicy().extract(text) is None
    assert AnswerPolicy(last_number_fallback=True).extract(text) is not None  # the option keeps the old reading


def test_a_completion_cut_at_max_tokens_is_unfinished_and_never_correct():
    policy = AnswerPolicy()
    cut = policy.label("14", "Step 1: 7 * 2 = 14.\nThe answer is 14.", "length")
    assert cut.outcome == "unfinished" and cut.correct is False and not cut.finished and cut.pred_answer is None
    done = policy.label("14", "Step 1: 7 * 2 = 14.\nThe answer is 14.", "stop")
    assert done.outcome == "correct" and done.correct is True
    silent = policy.label("5", " I am not sure.\nStep 5: Let me", "stop")
    assert silent.outcome == "no_answer" and silent.correct is False
    counts = count_outcomes([cut, done, silent])
    assert counts["unfinished"] == 1 and counts["correct"] == 1 and counts["no_answer"] == 1


def test_an_unparseable_prediction_is_wrong_and_only_a_bad_gold_is_an_error():
    policy = AnswerPolicy()
    unreadable = policy.label("5", "So the answer is \\boxed{\\text{}}.", "stop")
    assert unreadable.correct is False and unreadable.error is None, unreadable
    bad_gold = policy.label(None, "The answer is 5.", "stop")
    assert bad_gold.correct is None and bad_gold.error.startswith("gold_answer")


def test_first_divergence_moves_repeated_steps_into_the_prefix():
    steps = [" 3 * 4 = 12.\n", "Step 2: 12 + 5 = 17.\n", "Step 3: The answer is 17."]
    same_then_wrong = "Step 2: 12 + 5 = 17.\nStep 3: The answer is 18."
    assert first_divergence(steps, 1, same_then_wrong) == (2, "Step 3: The answer is 18.")
    assert first_divergence(steps, 1, "Step 2: 12 + 5 = 16.\nStep 3: The answer is 16.")[0] == 1
    assert first_divergence(steps, 1, "Step 2: 12 + 5 = 17.\nStep 3: The answer is 17.") is None
    assert first_divergence(steps, 0, " 3 * 4 = 12.\nStep 2: 12 + 5 = 17.\nStep 3: The answer is 17.") is None
