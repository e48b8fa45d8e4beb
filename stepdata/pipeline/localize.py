"""Stage 2, first-error localization over a rollouts table.

Every wrong rollout (``correct`` is False) becomes a localized row: the rollout
plus ``error_step`` (0-based; null when the method could not tell), the method,
its evidence (``rationale``) and what it cost (calls, tokens). Right and unjudged
rollouts are not localized; the summary counts them, so nothing disappears
unremarked.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from stepdata.localize.exact import exact_first_error
from stepdata.localize.judge import JudgeItem, JudgeLocalizer
from stepdata.localize.rollouts import RolloutItem, RolloutLocalizer
from stepdata.localize.rules import localize_by_rules
from stepdata.schema import LOCALIZED

METHODS = ("rules", "exact", "judge", "rules+judge", "rollouts")


class LocalizeStage:
    """Adds the localization columns to a batch of wrong rollouts (a stage's ``process``).

    ``rules+judge`` runs the rules first and asks the judge only where they find
    nothing. The judge needs each problem's question (and, for the Step-DPO
    protocol, its reference solution): pass the problems table.
    """

    def __init__(self, method: str = "rules", judge: JudgeLocalizer | None = None,
                 problems: pd.DataFrame | None = None, rollouts: RolloutLocalizer | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown localization method {method!r}; available: {list(METHODS)}")
        if "judge" in method and (judge is None or problems is None):
            raise ValueError(f"method {method!r} needs a judge and the problems table")
        if method == "exact" and problems is None:
            raise ValueError("method 'exact' needs the problems table (embedded problems carry their gold steps)")
        if method == "rollouts" and (rollouts is None or problems is None):
            raise ValueError("method 'rollouts' needs the policy (a RolloutLocalizer) and the problems table")
        self.method, self.judge, self.rollouts = method, judge, rollouts
        self.problems = problems.set_index("problem_id") if problems is not None else None

    def _problem(self, problem_id: str) -> pd.Series:
        try:
            return self.problems.loc[problem_id]  # type: ignore[union-attr]
        except KeyError:
            raise ValueError(f"problems table lacks problem_id {problem_id!r} used by the rollouts") from None

    def _judge_item(self, row: dict[str, Any]) -> JudgeItem:
        problem = self.problems.loc[row["problem_id"]]  # type: ignore[union-attr]
        return JudgeItem(row["rollout_id"], problem["question"], list(row.get("steps") or []), problem["solution"])

    def __call__(self, rollouts: pd.DataFrame) -> pd.DataFrame:
        records = rollouts.to_dict("records")
        results: dict[str, dict[str, Any]] = {}
        ask: list[dict[str, Any]] = []
        for row in records:
            steps = list(row.get("steps") or [])
            base = {"method": self.method, "votes": None, "localizer_calls": 0, "localizer_tokens": 0, "error": row["error"]}
            if not steps:
                results[row["rollout_id"]] = base | {"error_step": None, "confidence": None, "rationale": "no steps to check"}
                continue
            if self.method == "exact":
                error_step, why = exact_first_error(steps, self._problem(row["problem_id"])["meta"])
                results[row["rollout_id"]] = base | {"error_step": error_step, "rationale": why,
                                                     "confidence": 1.0 if error_step is not None else None}
                continue
            if "rules" in self.method:
                verdict = localize_by_rules(steps)
                if verdict.error_step is not None or self.method == "rules":
                    results[row["rollout_id"]] = base | {
                        "method": "rules", "error_step": verdict.error_step,
                        "confidence": 1.0 if verdict.error_step is not None else None, "rationale": verdict.rationale}
                    continue
            ask.append(row)
        if ask:
            missing = sorted({r["problem_id"] for r in ask} - set(self.problems.index))  # type: ignore[union-attr]
            if missing:
                raise ValueError(f"problems table lacks problem_id(s) {missing[:5]} used by the rollouts")
        if ask and self.method == "rollouts":
            items = [RolloutItem(r["rollout_id"], self.problems.loc[r["problem_id"], "question"],  # type: ignore[union-attr]
                                 self.problems.loc[r["problem_id"], "answer"], list(r["steps"])) for r in ask]  # type: ignore[union-attr]
            for row, mc in zip(ask, self.rollouts.localize(items)):  # type: ignore[union-attr]
                results[row["rollout_id"]] = {
                    "method": f"rollouts-{self.rollouts.search}", "error_step": mc.error_step, "votes": None,  # type: ignore[union-attr]
                    "confidence": mc.mc.get(mc.error_step) if mc.error_step is not None else None,
                    "rationale": mc.rationale, "localizer_calls": mc.probes, "localizer_tokens": mc.tokens,
                    "error": mc.error,
                }
            ask = []
        if ask:
            for row, verdict in zip(ask, self.judge.localize([self._judge_item(r) for r in ask])):  # type: ignore[union-attr]
                results[row["rollout_id"]] = {
                    "method": "judge", "error_step": verdict.error_step, "votes": verdict.votes,
                    "confidence": verdict.confidence, "rationale": verdict.rationale,
                    "localizer_calls": verdict.calls, "localizer_tokens": verdict.tokens,
                    "error": verdict.error,  # a judge that failed is retried on resume
                }
        rows = [row | results[row["rollout_id"]] for row in records]
        return pd.DataFrame(rows, columns=LOCALIZED.names)

    @staticmethod
    def stats(localized: pd.DataFrame) -> dict[str, Any]:
        found = localized["error_step"].notna()
        return {
            "localized": int(found.sum()),
            "unknown": int((~found).sum()),
            "error_step_histogram": {int(k): int(v) for k, v in localized.loc[found, "error_step"].value_counts().sort_index().items()},
            "localizer_calls": int(localized["localizer_calls"].fillna(0).sum()),
            "localizer_tokens": int(localized["localizer_tokens"].fillna(0).sum()),
            "by_method": {str(k): int(v) for k, v in localized["method"].value_counts().items()},
            "error_rows": int(localized["error"].notna().sum()),
        }


def wrong_rollouts(rollouts: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rollouts to localize, and counts of the ones left out (and why)."""
    correct = rollouts["correct"]
    wrong = rollouts[correct.eq(False) & rollouts["error"].isna()]
    left_out = {
        "correct": int(correct.eq(True).sum()),
        "unjudged_or_failed": int(len(rollouts) - len(wrong) - correct.eq(True).sum()),
    }
    return wrong.reset_index(drop=True), left_out
