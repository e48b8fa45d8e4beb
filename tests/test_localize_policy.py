"""The rollout localizer reads answers with the run's AnswerPolicy: the continuation alone, unfinished never
right, answer checks that fail left out of the estimate (never counted as a failed rollout)."""

from __future__ import annotations

import importlib

import pytest

from stepdata.answers import Verdict
from stepdata.answers.verify import check_answers as real_check_answers
from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize.rollouts import RolloutItem, RolloutLocalizer


class ScriptedPolicy(Generator):
    """Answers each probe with the continuations ``script(prefix)`` gives: [(text, finish_reason), ...]."""

    backend = "scripted"

    def __init__(self, script):
        super().__init__("scripted")
        self.script = script
        self.probed: list[int] = []

    def _generate(self, requests, sampling, progress, stats):
        results = []
        for request in requests:
            prefix = int(request.request_id.rsplit("@", 1)[1])
            self.probed.append(prefix)
            replies = self.script(prefix)
            assert len(replies) == sampling.n
            results.append(GenerationResult(request.request_id, "prompt", 10,
                                            [Completion(text, reason, 5) for text, reason in replies]))
        return results


STEPS = ["Step 1: Ada has 100 apples. The answer is 100.\n", "Step 2: She eats 3, so 97 are left.\n",
         "Step 3: The answer is 97.\n"]
ITEM = RolloutItem("r", "Ada has 100 apples and eats none. How many are left?", "100", STEPS)


def test_an_answer_stated_in_the_prefix_is_not_reached_by_the_continuation():
    # From the question alone the policy solves it; from any later prefix it writes no answer.
    # The prefix from step 1 on states "The answer is 100": prefix + continuation would read it.
    policy = ScriptedPolicy(lambda p: [(" The answer is 100.", "stop")] * 4 if p == 0 else [(" Hmm.", "stop")] * 4)
    verdict = RolloutLocalizer(policy, rollouts=4, search="linear").localize([ITEM])[0]
    assert verdict.mc == {0: 1.0, 1: 0.0}
    assert verdict.error_step == 0


def test_a_continuation_cut_at_max_tokens_never_reaches_the_answer():
    def script(prefix):
        if prefix == 0:
            return [(" so 100 left. The answer is 100.", "stop")] * 4
        return [(" so 100 left. The answer is 100. And then", "length")] * 4  # states it, but was cut

    verdict = RolloutLocalizer(ScriptedPolicy(script), rollouts=4, search="linear").localize([ITEM])[0]
    assert verdict.mc == {0: 1.0, 1: 0.0} and verdict.error_step == 0


def test_the_answer_policy_reaches_the_localizer():
    from stepdata.answers import AnswerPolicy

    # "so 100 are left" states no answer explicitly: only the last-number fallback reads it.
    script = lambda p: [(" so 100 are left", "stop")] * 2 if p <= 1 else [(" so 3 are left", "stop")] * 2  # noqa: E731
    strict = RolloutLocalizer(ScriptedPolicy(script), rollouts=2, search="linear").localize([ITEM])[0]
    assert strict.error_step is None and strict.mc == {0: 0.0}  # never reaches an answer: unknown
    lenient = RolloutLocalizer(ScriptedPolicy(script), rollouts=2, search="linear",
                               answer_policy=AnswerPolicy(last_number_fallback=True)).localize([ITEM])[0]
    assert lenient.error_step == 1 and lenient.mc == {0: 1.0, 1: 1.0, 2: 0.0}


@pytest.fixture
def latex_checks_time_out(monkeypatch):
    """Math-Verify answers (anything with LaTeX) time out; plain numbers are checked for real."""

    def check_answers(pairs, config=None):
        verdicts = real_check_answers([(g, a) for g, a in pairs if "\\" not in str(a)], config)
        it = iter(verdicts)
        return [Verdict(False, "timeout", "math-verify", f"over {config.timeout}s") if "\\" in str(a) else next(it)
                for _, a in pairs]

    monkeypatch.setattr(importlib.import_module("stepdata.answers.policy"), "check_answers", check_answers)


def test_a_timed_out_check_is_left_out_of_the_estimate(latex_checks_time_out):
    def script(prefix):
        if prefix == 0:  # 2 right, 2 whose check times out: MC = 2 / 2, not 2 / 4
            return [(" The answer is 100.", "stop")] * 2 + [(" The answer is \\frac{200}{2}.", "stop")] * 2
        if prefix == 1:  # 1 right, 1 wrong, 2 unchecked: MC = 1 / 2
            return [(" The answer is 100.", "stop"), (" The answer is 7.", "stop")] + [(" \\boxed{\\frac{200}{2}}", "stop")] * 2
        return [(" The answer is 97.", "stop")] * 4

    verdict = RolloutLocalizer(ScriptedPolicy(script), rollouts=4, search="linear").localize([ITEM])[0]
    assert verdict.mc == {0: 1.0, 1: 0.5, 2: 0.0}
    assert verdict.unchecked == {0: 2, 1: 2, 2: 0}
    assert verdict.error_step == 1 and verdict.error is None
    assert "4 rollouts left out" in verdict.rationale and "prefix 0: 2" in verdict.rationale


def test_a_probe_whose_every_check_failed_is_unknown_not_zero(latex_checks_time_out):
    def script(prefix):
        if prefix == 0:
            return [(" The answer is 100.", "stop")] * 3
        return [(" The answer is \\frac{200}{2}.", "stop")] * 3  # all time out

    policy = ScriptedPolicy(script)
    verdict = RolloutLocalizer(policy, rollouts=3, search="linear").localize([ITEM])[0]
    assert verdict.error_step is None, "a probe nobody could check says nothing about the error"
    assert verdict.mc == {0: 1.0} and 1 not in verdict.mc
    assert verdict.unchecked[1] == 3 and verdict.status == "unknown"
    assert verdict.error.startswith("answer_check:")  # the row is retried on resume
    assert policy.probed == [0, 1]  # the search stopped there


def test_a_cut_solution_is_unfinished_when_its_every_prefix_still_succeeds():
    cut = RolloutItem("c", ITEM.question, "100", STEPS[:2], finished=False)
    always = ScriptedPolicy(lambda p: [(" The answer is 100.", "stop")] * 2)
    verdict = RolloutLocalizer(always, rollouts=2, search="binary").localize([cut])[0]
    assert verdict.error_step is None and verdict.status == "unfinished" and 2 in verdict.mc
    failing = ScriptedPolicy(lambda p: [(" The answer is 100.", "stop")] * 2 if p < 2 else [(" The answer is 9.", "stop")] * 2)
    verdict = RolloutLocalizer(failing, rollouts=2, search="linear").localize([cut])[0]
    assert verdict.error_step == 1 and verdict.status == "error"
