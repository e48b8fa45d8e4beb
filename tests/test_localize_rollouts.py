"""The Monte-Carlo rollout localizer: linear scan and binary search agree; binary stays within its probe budget."""

import random

from conftest import requires_torch

from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize.rollouts import RolloutItem, RolloutLocalizer, max_binary_probes


class PrefixScriptedPolicy(Generator):
    """Stands in for a policy whose continuations succeed only from prefixes before the known error.

    It tests the search, not a model: a continuation from prefix i reaches the gold answer with
    probability ``p`` when i <= error step, and never after it (the MC model's assumption).
    """

    backend = "scripted"

    def __init__(self, first_errors: dict[str, int], answers: dict[str, str], p: float = 0.6):
        super().__init__("scripted")
        self.first_errors, self.answers, self.p = first_errors, answers, p
        self.requests = 0

    def _generate(self, requests, sampling, progress, stats):
        results = []
        for request in requests:
            item, prefix = request.request_id.rsplit("@", 1)
            clean = int(prefix) <= self.first_errors[item]
            rng = random.Random(request.request_id)
            texts = []
            for _ in range(sampling.n):
                right = clean and rng.random() < self.p
                gold = int(self.answers[item])
                texts.append(f" so the total is {gold if right else gold + 7}.\nThe answer is {gold if right else gold + 7}.")
            self.requests += 1
            results.append(GenerationResult(request.request_id, "prompt", 10,
                                            [Completion(t, "stop", 12) for t in texts]))
        return results


def make_items(count: int, seed: int = 0):
    rng = random.Random(seed)
    items, errors, answers = [], {}, {}
    for i in range(count):
        n = rng.randint(1, 12)
        item = RolloutItem(f"s{i}", f"question {i}", str(100 + i), [f"Step {k + 1}: x.\n" for k in range(n)])
        items.append(item)
        errors[item.item_id] = rng.randrange(n)
        answers[item.item_id] = item.answer
    return items, errors, answers


def test_binary_search_matches_linear_scan_within_its_budget():
    items, errors, answers = make_items(200)
    verdicts = {}
    spent = {}
    for search in ("linear", "binary"):
        policy = PrefixScriptedPolicy(errors, answers, p=0.9)
        localizer = RolloutLocalizer(policy, rollouts=8, search=search)
        verdicts[search] = localizer.localize(items)
        spent[search] = sum(v.rollouts for v in verdicts[search])
    for item, linear, binary in zip(items, verdicts["linear"], verdicts["binary"]):
        assert linear.error_step == binary.error_step == errors[item.item_id]
        assert binary.probes <= max_binary_probes(len(item.steps))
        assert all(0 <= v <= 1 for v in binary.mc.values()) and binary.mc[0] > 0
    assert spent["binary"] < spent["linear"]


def test_a_policy_that_never_solves_the_problem_gives_unknown():
    items, errors, answers = make_items(5, seed=1)
    policy = PrefixScriptedPolicy({k: -1 for k in errors}, answers)
    verdicts = RolloutLocalizer(policy, rollouts=4).localize(items + [RolloutItem("empty", "q", "1", [])])
    assert all(v.error_step is None and v.probes == 1 and v.mc == {0: 0.0} for v in verdicts[:5])
    assert verdicts[5].error == "no steps to localize" and verdicts[5].probes == 0


class FailsFromPrefixOne(PrefixScriptedPolicy):
    """Solves the problem from the question alone; the engine fails every later probe (prompt counted)."""

    def _generate(self, requests, sampling, progress, stats):
        ok = super()._generate(requests, sampling, progress, stats)
        return [result if result.request_id.endswith("@0") else
                GenerationResult(result.request_id, "prompt", 10, error="HTTP 500: server error")
                for result in ok]


def test_probe_cost_is_prompt_plus_completion_and_a_failed_probe_keeps_the_rollout_error():
    item = RolloutItem("s", "question", "100", ["Step 1: x.\n", "Step 2: y.\n", "Step 3: z.\n"])
    policy = FailsFromPrefixOne({"s": 1}, {"s": "100"}, p=1.0)
    (verdict,) = RolloutLocalizer(policy, rollouts=4, search="linear").localize([item])
    assert verdict.mc == {0: 1.0} and verdict.probes == 2 and verdict.rollouts == 4
    assert verdict.error == "rollout: HTTP 500: server error"  # the error kind the run summary counts
    assert verdict.error_step is None and verdict.status == "unknown"
    assert verdict.tokens == (10 + 4 * 12) + 10  # prompt + completion of probe 0, the failed probe's prompt


@requires_torch
def test_rollouts_run_on_a_real_model(tiny_model_dir):
    from stepdata.generation import make_generator

    with make_generator("hf", str(tiny_model_dir)) as generator:
        localizer = RolloutLocalizer(generator, rollouts=2, max_tokens=8)
        verdict = localizer.localize([RolloutItem("r", "Ada has 5 marbles.", "5", ["Ada has 5.\n", "So 6."])])[0]
    assert verdict.probes >= 1 and verdict.rollouts == 2 * verdict.probes and 0 in verdict.mc


def test_max_binary_probes():
    assert [max_binary_probes(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 3, 3, 4, 4, 5]
