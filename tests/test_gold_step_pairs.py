"""Step-DPO's out-of-distribution ablation: a Step-DPO pair with the gold step as chosen."""

from __future__ import annotations

import pandas as pd

from stepdata.embedded import make_problems
from stepdata.pairs import make_pair, prompt_messages_of
from stepdata.pairs.gold_steps import gold_step_pairs, gold_steps
from stepdata.prompts import load_prompt
from stepdata.schema import PAIRS
from stepdata.steps import split_steps

PROBLEMS = make_problems(2, seed=2, min_steps=3, max_steps=3)
# problem 0: "Kavya has 40 seed packets. Next Kavya buys 3 crates with 3 ... Then Kavya buys 9 more ..."
# gold: Step 1: ... 3 * 3 = 9 ...  Step 2: ... 40 + 9 = 49 ...  Step 3: ... 49 + 9 = 58 ...  The answer is 58.


def _step_dpo_pair(problem: pd.Series, policy_steps: list[str], k: int, chosen: str, chosen_rest: str) -> dict:
    """A pair as rectify makes it: the policy's steps before k, its wrong step k, a right step of its own."""
    messages = load_prompt("step_by_step").render(question=problem["question"])
    return make_pair(problem_id=problem["problem_id"], question=problem["question"], answer=problem["answer"],
                     prompt_messages=prompt_messages_of(messages), prefix_steps=policy_steps[:k], chosen=chosen,
                     rejected=policy_steps[k], chosen_rest=chosen_rest, rejected_rest="".join(policy_steps[k + 1:]),
                     kind="step-dpo", error_step=k, chosen_verified=True, model="policy", localizer="exact")


def test_gold_steps_are_cut_like_the_policy_steps_after_the_partial_answer():
    solution = PROBLEMS.iloc[0]["solution"]
    steps = gold_steps(solution, "Let's think step by step.\nStep 1:")
    assert steps[0] == " The 3 new crates hold 3 * 3 = 9 seed packets.\n"  # "Step 1:" is the template's
    assert steps[1].startswith("Step 2: Adding them") and steps[1].endswith("\n")
    assert steps[-1] == "Step 3: After buying 9 more, Kavya has 49 + 9 = 58 seed packets.\nThe answer is 58."
    assert len(steps) == 3 and "Step 1:" + "".join(steps) == solution


def test_the_chosen_step_is_the_gold_step_at_the_error_and_the_rest_of_the_pair_is_kept():
    problem = PROBLEMS.iloc[0]
    policy = split_steps(" Kavya buys 3 crates of 3, so 3 * 3 = 9 seed packets.\n"
                         "Step 2: Now she has 40 + 9 = 50 seed packets.\n"  # wrong: first error at k = 1
                         "Step 3: With 9 more, 50 + 9 = 59 seed packets.\nThe answer is 59.")
    own = _step_dpo_pair(problem, policy, 1, "Step 2: Together that is 40 + 9 = 49 seed packets.\n",
                         "Step 3: 49 + 9 = 58.\nThe answer is 58.")
    out, skipped = gold_step_pairs(pd.DataFrame([own], columns=PAIRS.names), PROBLEMS)
    assert skipped.empty and len(out) == 1
    pair = out.iloc[0]
    assert pair["chosen"] == "Step 2: Adding them, Kavya has 40 + 9 = 49 seed packets.\n"
    assert pair["rejected"] == policy[1] and list(pair["prefix_steps"]) == policy[:1]  # the policy's own prefix
    assert pair["error_step"] == 1 and pair["kind"] == "step-dpo"
    head = "Let's think step by step.\nStep 1:" + policy[0]
    assert pair["chosen_full"] == head + pair["chosen"] + \
        "Step 3: After buying 9 more, Kavya has 49 + 9 = 58 seed packets.\nThe answer is 58."
    assert pair["rejected_full"] == own["rejected_full"]
    assert not pair["chosen_ends_solution"] and not pair["rejected_ends_solution"]  # middle steps: no EOS
    assert pair["chosen_verified"] is True or pair["chosen_verified"] == True  # noqa: E712 - numpy bool
    assert pair["provenance"]["model"] == "gold" and pair["pair_id"] != own["pair_id"]


def test_the_first_step_follows_the_templates_step_marker():
    problem = PROBLEMS.iloc[0]
    policy = split_steps(" The 3 new crates hold 3 * 3 = 6 seed packets.\nStep 2: 40 + 6 = 46.\nThe answer is 55.")
    own = _step_dpo_pair(problem, policy, 0, " 3 crates of 3 make 3 * 3 = 9 seed packets.\n", "Step 2: ...")
    out, _ = gold_step_pairs(pd.DataFrame([own], columns=PAIRS.names), PROBLEMS)
    assert out.iloc[0]["chosen"] == " The 3 new crates hold 3 * 3 = 9 seed packets.\n"
    assert out.iloc[0]["chosen_full"] == PROBLEMS.iloc[0]["solution"].replace("Step 1:", "Let's think step by step.\n"
                                                                              "Step 1:", 1)


def test_pairs_that_cannot_be_swapped_are_returned_with_their_reason():
    problem = PROBLEMS.iloc[0]
    policy = split_steps(" 3 * 3 = 9.\nStep 2: 40 + 9 = 40.\nStep 3: 40 + 9 = 49.\nStep 4: 49 + 9 = 58.\n"
                         "The answer is 58.")
    first = _step_dpo_pair(problem, policy, 1, "Step 2: 40 + 9 = 49 seed packets.\n", "")
    second = _step_dpo_pair(problem, policy, 1, "Step 2: she has 40 + 9 = 49 now.\n", "")  # same wrong step
    too_deep = _step_dpo_pair(problem, policy, 3, "The answer is 58.", "")  # the gold has 3 steps (0-2)
    stranger = dict(first, problem_id="not-a-problem", pair_id="not-a-problem:step-dpo:x")
    whole = make_pair(problem_id=problem["problem_id"], question=problem["question"], answer="58",
                      prompt_messages=first["prompt_messages"], prefix_steps=[], chosen="right", rejected="wrong",
                      kind="dpo", error_step=None)
    table = pd.DataFrame([first, second, too_deep, stranger, whole], columns=PAIRS.names)
    out, skipped = gold_step_pairs(table, PROBLEMS)
    assert len(out) == 1
    reasons = dict(zip(skipped["pair_id"], skipped["reason"]))
    assert reasons == {second["pair_id"]: "duplicate", too_deep["pair_id"]: "no_gold_step",
                       stranger["pair_id"]: "unknown_problem", whole["pair_id"]: "kind"}
    assert len(out) + len(skipped) == len(table)  # nothing dropped silently
