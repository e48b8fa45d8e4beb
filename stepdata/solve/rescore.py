"""Best-of-k for every k up to n, and by other verifiers, from one finished best-of-n table.

The first k of n independent samples are k independent samples, so one best-of-n run gives the
whole best-of-k curve at the price of its largest point (the usual way to draw it), and a verifier
that reads no model (exact, rules, a PRM) can score the stored attempts afterwards. The choice is
made by :mod:`stepdata.solve.selection`, as in the stage, so a re-selection equals a run with that
k and verifier on the same samples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from stepdata.solve.config import SolveConfig
from stepdata.solve.selection import majority_pick, verifier_pick
from stepdata.solve.stats import wilson_interval
from stepdata.solve.verdicts import Attempt, AttemptVerifier, Verdict
from stepdata.steps import split_steps


def attempts_by_problem(solved: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each problem's attempt records, in the order they were sampled (a failed row has none)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in solved.itertuples():
        failed = row.error is not None and not (isinstance(row.error, float) and row.error != row.error)
        out[str(row.problem_id)] = [] if failed else json.loads(row.attempts or "[]")
    return out


def verify_stored(solved: pd.DataFrame, problems: pd.DataFrame, config: SolveConfig,
                  generator: Any = None) -> dict[str, list[Verdict]]:
    """Verdicts of ``config.verifier`` on every stored attempt, in one ``locate`` call; the steps are re-split
    from each completion with ``config.split_mode`` as the stage split them."""
    indexed = problems.assign(problem_id=problems["problem_id"].astype(str)).drop_duplicates(
        "problem_id").set_index("problem_id")
    verifier = AttemptVerifier(config.verify_settings(), indexed, lambda: generator, template=config.template,
                               answer_policy=config.answer_policy(), aggregate=config.prm_aggregate)
    stored = attempts_by_problem(solved)
    asked = [Attempt(f"{pid}:{i}", pid, split_steps(a["completion"], config.split_mode), a["finish_reason"] != "length")
             for pid, records in stored.items() for i, a in enumerate(records)]
    found = iter(verifier.verify(asked))
    return {pid: [next(found) for _ in records] for pid, records in stored.items()}


def best_of_k(solved: pd.DataFrame, k: int, verdicts: Mapping[str, Sequence[Verdict]] | None = None) -> dict[str, Any]:
    """Accuracy (95% Wilson interval) of majority vote over each problem's first ``k`` attempts and, with
    ``verdicts``, of the verifier's pick; tokens per problem for those k attempts (policy, verifier). Each
    selection's ``by_problem`` says per problem whether its pick was right (for paired comparisons)."""
    stored = attempts_by_problem(solved)
    short = [pid for pid, records in stored.items() if records and len(records) < k]
    if short:
        raise ValueError(f"best-of-{k} needs {k} attempts per problem; problem {short[0]!r} has "
                         f"{len(stored[short[0]])} ({len(short)} problems short)")
    correct = {"majority": 0, "verifier": 0}
    by_problem: dict[str, dict[str, bool]] = {"majority": {}, "verifier": {}}
    policy = verifier_tokens = 0
    for pid, records in stored.items():
        first = records[:k]
        if not first:
            by_problem["majority"][pid] = by_problem["verifier"][pid] = False
            continue  # a failed row: wrong, and its tokens are unknown
        answers = [a["answer"] for a in first]
        by_problem["majority"][pid] = bool(first[majority_pick(answers)]["correct"])
        correct["majority"] += by_problem["majority"][pid]
        policy += sum(int(a["policy_tokens"] or 0) for a in first)
        if verdicts is not None:
            scored = list(verdicts[pid])[:k]
            by_problem["verifier"][pid] = bool(first[verifier_pick([v.rank for v in scored], answers)]["correct"])
            correct["verifier"] += by_problem["verifier"][pid]
            verifier_tokens += sum(v.tokens for v in scored)
    total = len(stored)
    result: dict[str, Any] = {"k": k, "problems": total, "policy_tokens": round(policy / total, 1) if total else None,
                              "verifier_tokens": round(verifier_tokens / total, 1) if total else None}
    for selection in ("majority", "verifier") if verdicts is not None else ("majority",):
        result[f"by_{selection}"] = {"correct": correct[selection],
                                     "accuracy": round(correct[selection] / total, 4) if total else None,
                                     "ci95": wilson_interval(correct[selection], total),
                                     "by_problem": by_problem[selection]}
    return result
