"""Step-DPO's out-of-distribution ablation: the chosen step taken from the reference solution.

Step-DPO's chosen steps are the policy's own (rectification samples them from the
policy), and its paper reports that this in-distribution data beats chosen steps
written by another model. The ablation keeps everything of a Step-DPO pair (the
question, the policy's correct prefix, its wrong step as rejected) and swaps the
chosen step for the gold step at the same index: the step the problem generator
wrote, not the policy.

The gold step is cut from the problem's reference solution exactly as the policy's
steps are cut (after the template's partial answer, so "Step 1:" is not repeated),
which keeps the marker and the trailing newline in the same places; what follows it
in the reference solution becomes the chosen side's rest, so end-of-sequence goes
where it would for a policy step. Pairs that cannot be swapped are returned with a
reason, never dropped silently.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from stepdata.localize.exact import verify_step
from stepdata.pairs.build import make_pair, partial_answer
from stepdata.steps import (
    join_steps,
    normalized_step,
    split_steps,
    strip_partial_overlap,
)

GOLD_MODEL = "gold"  # provenance.model of a swapped chosen step: the problem generator's reference solution
SKIP_COLUMNS = ["pair_id", "problem_id", "reason", "detail"]


def gold_steps(solution: str, partial: str) -> list[str]:
    """The reference ``solution`` cut into steps as the policy's steps are cut after the template's ``partial``
    answer (which may already hold "Step 1:")."""
    return split_steps(strip_partial_overlap(partial, solution))


def _skip(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    return {"pair_id": row["pair_id"], "problem_id": row["problem_id"], "reason": reason, "detail": detail}


def gold_step_pairs(pairs: pd.DataFrame, problems: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every Step-DPO pair of ``pairs`` with its chosen step replaced by the gold step at its error step.

    Returns (new pairs, skipped). Other kinds are not inputs and are skipped (reason ``kind``); a pair
    is also skipped when its problem is not in ``problems`` (``unknown_problem``), has no reference
    solution (``no_gold_solution``), has fewer gold steps than its error step (``no_gold_step``), or
    when the gold step reads as the rejected one (``gold_equals_rejected``). Several in-distribution
    pairs of one wrong step (distinct chosen steps) give one gold pair; the others are skipped as
    ``duplicate``. ``chosen_verified`` is the exact check of the gold step against the problem's gold
    values (True for embedded problems by construction; None where the problem lists none).
    """
    by_id = problems.assign(problem_id=problems["problem_id"].astype(str)).set_index("problem_id")
    kept: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row in pairs.to_dict("records"):
        if row.get("kind") != "step-dpo":
            skipped.append(_skip(row, "kind", f"a {row.get('kind')!r} pair, not step-dpo"))
            continue
        problem_id = str(row["problem_id"])
        if problem_id not in by_id.index:
            skipped.append(_skip(row, "unknown_problem", f"problem {problem_id!r} is not in the problems table"))
            continue
        problem = by_id.loc[problem_id]
        solution = problem.get("solution")
        if not isinstance(solution, str) or not solution.strip():
            skipped.append(_skip(row, "no_gold_solution", "the problem has no reference solution"))
            continue
        k = int(row["error_step"])
        steps = gold_steps(solution, partial_answer(row.get("prompt_messages")))
        if k >= len(steps):
            skipped.append(_skip(row, "no_gold_step", f"error step {k} but the reference has {len(steps)} steps"))
            continue
        chosen = steps[k]
        if normalized_step(chosen) == normalized_step(row["rejected"]):
            skipped.append(_skip(row, "gold_equals_rejected", "the gold step reads as the rejected step"))
            continue
        prefix = list(row.get("prefix_steps") if row.get("prefix_steps") is not None else [])
        rejected_full = str(row["rejected_full"])
        head = partial_answer(row.get("prompt_messages")) + join_steps(prefix)
        rejected_rest = rejected_full[len(head) + len(row["rejected"]):] if rejected_full.startswith(
            head + row["rejected"]) else ""
        provenance = dict(row.get("provenance") or {})
        pair = make_pair(
            problem_id=problem_id, question=row["question"], answer=row.get("answer"),
            prompt_messages=row.get("prompt_messages"), prefix_steps=prefix, chosen=chosen,
            rejected=row["rejected"], chosen_rest=join_steps(steps[k + 1:]), rejected_rest=rejected_rest,
            kind="step-dpo", error_step=k, source=row.get("source"),
            chosen_verified=verify_step(chosen, k, problem.get("meta")),
            model=GOLD_MODEL, sampling={"chosen": "reference solution", "in_distribution_pair": row["pair_id"]},
            localizer=provenance.get("localizer"),
            rejected_finished=bool(row.get("rejected_ends_solution")) or bool(rejected_rest),
        )
        # the same wrong step (prefix, rejected, rest) swapped twice is one pair: its id repeats
        if pair["pair_id"] in seen:
            skipped.append(_skip(row, "duplicate", f"gives the same gold pair as {seen[pair['pair_id']]}"))
            continue
        seen[pair["pair_id"]] = row["pair_id"]
        kept.append(pair)
    columns = list(pairs.columns)
    out = pd.DataFrame(kept, columns=columns) if kept else pairs.iloc[0:0].copy()
    return out.reset_index(drop=True), pd.DataFrame(skipped, columns=SKIP_COLUMNS)


def skip_counts(skipped: pd.DataFrame) -> dict[str, int]:
    """Skipped pairs by reason (for a summary)."""
    return {str(k): int(v) for k, v in skipped["reason"].value_counts().items()} if len(skipped) else {}


def describe(pairs: pd.DataFrame, skipped: pd.DataFrame) -> str:
    """One line: how many gold pairs were made and why the others were not."""
    return f"{len(pairs)} gold-step pairs; skipped {json.dumps(skip_counts(skipped)) if len(skipped) else 'none'}"
