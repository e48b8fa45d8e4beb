"""A small run folder for the audit tests, built without a model: real problems, rollouts, localized and pairs tables.

Embedded problems (our generator) have gold steps, so solutions with known mistakes
can be written step by step: the gold solution, an arithmetic slip at step k (a false
claim: rules and exact both see it), a true equation on a wrong number at step k
(only exact sees it; rules cannot say where, so they answer "unknown"), a solution
cut at max_tokens, and one that states no answer. The answers are labelled by the
real AnswerPolicy, the localized tables made by the real localize stage (rules and
exact) and the pairs by the real pair builder, so every table is what the pipeline
writes, with its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata import AnswerPolicy, make_problems, write_table
from stepdata.pairs.build import make_pair, prompt_messages_of
from stepdata.pipeline.localize import LocalizeStage, wrong_rollouts
from stepdata.schema import ROLLOUTS
from stepdata.steps import join_steps

PARTIAL = "Let's think step by step.\nStep 1:"
SAMPLING = {"n": 5, "temperature": 0.8, "top_p": 0.95, "max_tokens": 256, "seed": 0}


def gold_steps(meta: str) -> list[dict[str, Any]]:
    return json.loads(meta)["steps"]


def _claim(expr: str, value: Any) -> str:
    return f"{expr} = {value}"


def write_solution(steps: list[dict[str, Any]], *, slip: int | None = None, wrong_number: int | None = None,
                   answer: str | None = "gold", upto: int | None = None) -> list[str]:
    """Steps as a model writes them after the template's "Step 1:" (the first step has no marker of its own).

    ``slip``: step k states a false result (value + 1); ``wrong_number``: step k computes a true equation
    on a wrong first operand; ``answer``: "gold", "off" (gold + 1) or None (no answer line); ``upto``: stop
    after that many steps (a solution cut short)."""
    texts = []
    for i, step in enumerate(steps):
        expr, value = step["expr"], step["value"]
        if i == slip:
            value = int(value) + 1
        if i == wrong_number:
            a, op, b = expr.split(" ")
            a = str(int(a) + 1)
            expr = f"{a} {op} {b}"
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        marker = "" if i == 0 else f"Step {i + 1}:"
        texts.append(f"{marker} So {_claim(expr, value)}.\n")
    if upto is not None:
        return texts[:upto]
    final = int(steps[-1]["value"])
    if answer is not None:
        texts[-1] += f"The answer is {final if answer == 'gold' else final + 1}."
    return texts


def _wrong_number_step(steps: list[dict[str, Any]]) -> int | None:
    """A step whose expression is "int op int" with op in + - * (so a wrong operand gives a true equation)."""
    for i, step in enumerate(steps):
        parts = step["expr"].split(" ")
        if len(parts) == 3 and parts[1] in "+-*" and parts[0].isdigit() and parts[2].isdigit():
            return i
    return None


def build_rollouts(problems: pd.DataFrame) -> pd.DataFrame:
    """Five solutions per problem (see the module doc), labelled by the AnswerPolicy."""
    rows, items = [], []
    for problem in problems.to_dict("records"):
        steps = gold_steps(problem["meta"])
        prompt = f"<|user|>\n{problem['question']}\n<|assistant|>\n{PARTIAL}"
        variants: list[tuple[list[str], str]] = [(write_solution(steps), "stop"),
                                                 (write_solution(steps, slip=1, answer="off"), "stop"),
                                                 (write_solution(steps, upto=2), "length"),
                                                 (write_solution(steps, answer=None), "stop")]
        k = _wrong_number_step(steps)
        if k is not None:
            variants.insert(2, (write_solution(steps, wrong_number=k, answer="off"), "stop"))
        for j, (texts, finish) in enumerate(variants):
            completion = join_steps(texts)
            rows.append({"problem_id": problem["problem_id"], "rollout_id": f"{problem['problem_id']}:{j}",
                         "prompt": prompt, "completion": completion, "steps": texts, "finish_reason": finish,
                         "model": "hand-written", "sampling": dict(SAMPLING), "prompt_tokens": len(prompt) // 4,
                         "completion_tokens": len(completion) // 4})
            items.append((problem["answer"], completion, finish))
    labels = AnswerPolicy().label_many(items)
    for row, label in zip(rows, labels):
        row.update(pred_answer=label.pred_answer, correct=label.correct, error=label.error)
    return pd.DataFrame(rows, columns=ROLLOUTS.names)


def localize(rollouts: pd.DataFrame, problems: pd.DataFrame, method: str, **options: Any) -> pd.DataFrame:
    """The localize stage's rows for the wrong rollouts (in memory, as a batch of the stage)."""
    wrong, _ = wrong_rollouts(rollouts)
    needs_problems = method == "exact"
    return LocalizeStage(method, problems=problems if needs_problems else None, **options)(wrong)


def build_pairs(localized: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """Step-DPO pairs from the localized rows whose first error is known: the gold step against the wrong one."""
    by_id = problems.set_index("problem_id")
    pairs = []
    for row in localized.to_dict("records"):
        if row["status"] != "error":
            continue
        k = int(row["error_step"])
        problem = by_id.loc[row["problem_id"]]
        right = write_solution(gold_steps(problem["meta"]))
        messages = prompt_messages_of([{"role": "user", "content": problem["question"]},
                                       {"role": "assistant", "content": PARTIAL}])
        pairs.append(make_pair(
            problem_id=row["problem_id"], question=problem["question"], answer=problem["answer"],
            prompt_messages=messages, prefix_steps=row["steps"][:k], chosen=right[k], rejected=row["steps"][k],
            chosen_rest="".join(right[k + 1:]), rejected_rest="".join(row["steps"][k + 1:]), kind="step-dpo",
            error_step=k, source="embedded", chosen_verified=True, model="hand-written", sampling=SAMPLING,
            localizer=row["method"]))
    return pd.DataFrame(pairs)


def build_run(out: Path, n_problems: int = 6, seed: int = 0) -> Path:
    """A folder shaped like the quickstart's output (problems, rollouts, localized by exact, pairs)."""
    out.mkdir(parents=True, exist_ok=True)
    problems = make_problems(n_problems, seed=seed)
    write_table(problems, out / "problems.parquet", "problems", config={"source": f"embedded:{n_problems}"})
    rollouts = build_rollouts(problems)
    lineage = {"lineage": {"problems": str((out / "problems.parquet").resolve()), "template": "step_by_step"}}
    write_table(rollouts, out / "rollouts.parquet", "rollouts", config={"stage": "sample", **lineage})
    localized = localize(rollouts, problems, "exact")
    write_table(localized, out / "localized.parquet", "localized", config={"stage": "localize", "method": "exact",
                                                                            **lineage})
    write_table(build_pairs(localized, problems), out / "pairs.parquet", "pairs", config={"stage": "test"})
    return out
