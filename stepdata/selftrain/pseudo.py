"""Pseudo-labels: the sampled rationales that reached the gold answer, as more SFT data.

The self-training half of DPO-ST: the DPO model answers the training questions, and its
right rationales become labelled examples for the next SFT. As in the authors' scripts,
the reference rationale leads each question's list, near duplicates (word Jaccard above
the threshold, see :mod:`stepdata.pairs.dpo_st`) are merged, so a pseudo-label that only
restates the reference or another pseudo-label is not kept, and each question keeps at
most a cap of them: by default the 90th percentile of the per-question counts, which
keeps the few questions the model solves in many ways from filling the data.

Each pseudo-label is a problems row (the question's id, question and gold answer, its
``solution`` the template's partial answer followed by the rationale, so the SFT data
step teaches exactly what the model wrote); ``meta`` names the rollout it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from stepdata.pairs.dpo_st import (
    Rationale,
    labelled_rationales,
    merge_near_duplicates,
    reference_rationale,
)
from stepdata.schema import PROBLEMS

PERCENTILE = 90  # the default cap: this percentile of the per-question counts (DPO-ST's scripts)


def percentile_cap(counts: list[int], percentile: float = PERCENTILE) -> int | None:
    """The cap the counts imply: their ``percentile`` (linear interpolation, rounded down, at least 1);
    None when there are no counts."""
    if not counts:
        return None
    ordered = sorted(counts)
    position = (len(ordered) - 1) * percentile / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return max(1, int(value))


def pseudo_labels(problems: pd.DataFrame, rollouts: Iterable[pd.DataFrame], template: Any, *, threshold: float,
                  per_question: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Pseudo-labelled problems rows from the right rationales of ``rollouts``, and what was counted.

    ``per_question`` caps each question's pseudo-labels (None: the 90th percentile of the counts).
    A rationale cut at ``max_tokens`` is never right, so never a pseudo-label.
    """
    pools = labelled_rationales(rollouts)
    partial = template.render(question="")[-1]["content"] if template.continues_assistant else ""
    chosen: dict[str, list[Rationale]] = {}
    right = merged = 0
    for problem in problems.itertuples(index=False):
        pid = str(problem.problem_id)
        positives = [r for r in pools.get(pid, ([], [], None))[0] if r.finished]
        right += len(positives)
        reference = reference_rationale(problem.solution, problem.answer, partial)
        lead = [Rationale(reference, "reference")] if reference is not None else []
        kept = [r for r in merge_near_duplicates([*lead, *positives], threshold) if not r.is_reference]
        merged += len(positives) - len(kept)
        if kept:
            chosen[pid] = kept
    counts = [len(kept) for kept in chosen.values()]
    cap = per_question if per_question is not None else percentile_cap(counts)
    rows = []
    by_id = problems.assign(problem_id=problems["problem_id"].astype(str)).set_index("problem_id")
    for pid, kept in chosen.items():
        problem = by_id.loc[pid]
        if isinstance(problem, pd.DataFrame):  # a problem id repeated in the table: its first row
            problem = problem.iloc[0]
        for rationale in kept[:cap]:
            rows.append({"problem_id": pid, "question": problem["question"], "answer": problem["answer"],
                         "solution": partial + rationale.text, "source": problem["source"],
                         "meta": json.dumps({"pseudo_label": True, "rollout_id": rationale.origin,
                                             "model": rationale.model})})
    table = pd.DataFrame(rows, columns=PROBLEMS.names)
    stats = {"pseudo_labels": len(table), "questions_with_pseudo_labels": len(chosen), "right_rationales": right,
             "merged_as_near_duplicates": merged, "cap_per_question": cap,
             "cap_rule": "given" if per_question is not None else f"{PERCENTILE}th percentile",
             "left_out_by_cap": sum(max(0, n - cap) for n in counts) if cap is not None else 0}
    return table, stats
