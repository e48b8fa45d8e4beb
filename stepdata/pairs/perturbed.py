"""Pairs with a known error and no model: an embedded problem's gold step against the same
step with its result changed by one.

Useful wherever pairs are needed before a policy exists (trainer tests, the
training benchmark, a first Step-DPO run on a GPU): the rejected step is wrong by
construction and the error step is exact.
"""

from __future__ import annotations

import json

import pandas as pd

from stepdata.pairs.build import make_pair, prompt_messages_of
from stepdata.prompts import load_prompt
from stepdata.schema import PAIRS
from stepdata.steps import join_steps, split_steps, strip_partial_overlap


def _off_by_one(step: str, value: int) -> str:
    wrong = step.replace(f"= {value} ", f"= {value + 1} ").replace(f"answer is {value}.", f"answer is {value + 1}.")
    if wrong == step:
        raise ValueError(f"cannot find the result {value} in step {step!r}")
    return wrong


def perturbed_pairs(problems: pd.DataFrame, kind: str = "step-dpo", template: str = "step_by_step",
                    error_at: str = "last") -> pd.DataFrame:
    """One pair per embedded problem; the error sits at the last step (``error_at="last"``) or the middle one.

    ``step-dpo``: chosen/rejected are step k only; ``scdpo``: the whole rest from
    step k (the wrong value carried into the answer); ``dpo``: whole solutions
    with the error at step 0.
    """
    prompt = load_prompt(template)
    partial = prompt.render(question="")[-1]["content"]
    rows = []
    for p in problems.itertuples(index=False):
        values = [s["value"] for s in json.loads(p.meta)["steps"]]
        steps = split_steps(strip_partial_overlap(partial, p.solution))
        k = 0 if kind == "dpo" else (len(values) - 1 if error_at == "last" else len(values) // 2)
        wrong_k = _off_by_one(steps[k], values[k])
        wrong_answer = f"The answer is {values[-1] + 1}."
        if kind == "step-dpo":
            chosen, rejected = steps[k], wrong_k
            rests = (join_steps(steps[k + 1:]), join_steps(steps[k + 1:]).replace(
                f"The answer is {values[-1]}.", wrong_answer) if k + 1 < len(steps) else "")
        else:
            chosen = join_steps(steps[k:])
            tail = join_steps(steps[k + 1:])
            rejected = wrong_k + (tail.replace(f"The answer is {values[-1]}.", wrong_answer) if tail else "")
            if wrong_answer not in rejected:
                rejected = rejected.rstrip("\n") + "\n" + wrong_answer
            rests = ("", "")
        rows.append(make_pair(problem_id=p.problem_id, question=p.question, answer=p.answer,
                              prompt_messages=prompt_messages_of(prompt.render(question=p.question)),
                              prefix_steps=steps[:k], chosen=chosen, rejected=rejected, chosen_rest=rests[0],
                              rejected_rest=rests[1], kind=kind, error_step=k, source=p.source,
                              chosen_verified=True, chosen_source="reference", localizer="constructed"))
    return pd.DataFrame(rows, columns=PAIRS.names)
