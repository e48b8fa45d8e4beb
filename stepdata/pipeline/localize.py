"""Stage 2, first-error localization over a rollouts table.

Every wrong rollout (``correct`` is False) becomes a localized row: the rollout
plus ``error_step`` (0-based; -1 when no error was found; null when the method
could not tell or the solution is unfinished), its ``status`` (error, no_error,
unknown, unfinished: see :data:`stepdata.schema.LOCALIZE_STATUSES`), the method,
its evidence (``rationale``; for the judge, the votes and every raw reply) and
what it cost (calls, tokens). Right and unjudged rollouts are not localized; the
summary counts them, so nothing disappears unremarked.

A rollout cut at ``max_tokens`` (``finish_reason == "length"``) in which no error
is found is ``unfinished``, never "no error": its missing steps were never judged.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from stepdata.answers import is_unfinished
from stepdata.localize.exact import exact_first_error
from stepdata.localize.judge import JudgeItem, JudgeLocalizer, judge_evidence
from stepdata.localize.rollouts import RolloutItem, RolloutLocalizer
from stepdata.localize.rules import Tolerance, localize_by_rules
from stepdata.schema import LOCALIZE_STATUSES, LOCALIZED, status_of_error_step

METHODS = ("rules", "exact", "judge", "rules+judge", "rollouts")


def _verdict(error_step: int | None, unfinished: bool) -> tuple[int | None, str]:
    """(error_step, status) for a method's answer: "no error" in a cut solution is unfinished."""
    if error_step is None:
        return None, "unknown"
    if error_step == -1:
        return (None, "unfinished") if unfinished else (-1, "no_error")
    return error_step, "error"


class LocalizeStage:
    """Adds the localization columns to a batch of wrong rollouts (a stage's ``process``).

    ``rules+judge`` runs the rules first and asks the judge only where they find
    no false claim. The judge needs each problem's question (and, for the Step-DPO
    protocol, its reference solution): pass the problems table (a problem listed
    twice is used once). ``rules_tolerance`` is the rules' precision mode
    (:mod:`stepdata.localize.rules`).
    """

    def __init__(self, method: str = "rules", judge: JudgeLocalizer | None = None,
                 problems: pd.DataFrame | None = None, rollouts: RolloutLocalizer | None = None,
                 rules_tolerance: Tolerance = "written") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown localization method {method!r}; available: {list(METHODS)}")
        if "judge" in method and (judge is None or problems is None):
            raise ValueError(f"method {method!r} needs a judge and the problems table")
        if method == "exact" and problems is None:
            raise ValueError("method 'exact' needs the problems table (embedded problems carry their gold steps)")
        if method == "rollouts" and (rollouts is None or problems is None):
            raise ValueError("method 'rollouts' needs the policy (a RolloutLocalizer) and the problems table")
        self.method, self.judge, self.rollouts, self.rules_tolerance = method, judge, rollouts, rules_tolerance
        self.problems = problems.drop_duplicates("problem_id").set_index("problem_id") if problems is not None else None

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
            unfinished = is_unfinished(row.get("finish_reason"))
            base = {"method": self.method, "votes": None, "localizer_calls": 0, "localizer_tokens": 0, "error": row["error"]}
            if not steps:
                results[row["rollout_id"]] = base | {"error_step": None, "status": "unknown", "confidence": None,
                                                     "rationale": "no steps to check"}
                continue
            if self.method == "exact":
                found = exact_first_error(steps, self._problem(row["problem_id"])["meta"], finished=not unfinished)
                results[row["rollout_id"]] = base | {
                    "error_step": found.error_step, "status": found.status, "rationale": found.rationale,
                    "confidence": 1.0 if found.status in ("error", "no_error") else None}
                continue
            if "rules" in self.method:
                verdict = localize_by_rules(steps, self.rules_tolerance)
                false_claim = verdict.error_step is not None and verdict.error_step >= 0
                if false_claim or self.method == "rules":
                    # the rollout's answer is wrong, so some step is: rules that find no false claim
                    # cannot say which (unknown), nor call it error-free
                    error_step, status = (verdict.error_step, "error") if false_claim else (
                        None, "unfinished" if unfinished else "unknown")
                    why = verdict.rationale + ("; cut at max_tokens" if status == "unfinished" else "")
                    results[row["rollout_id"]] = base | {
                        "method": "rules", "error_step": error_step, "status": status,
                        "confidence": 1.0 if status == "error" else None, "rationale": why}
                    continue
            ask.append(row)
        if ask:
            missing = sorted({r["problem_id"] for r in ask} - set(self.problems.index))  # type: ignore[union-attr]
            if missing:
                raise ValueError(f"problems table lacks problem_id(s) {missing[:5]} used by the rollouts")
        if ask and self.method == "rollouts":
            items = [RolloutItem(r["rollout_id"], self.problems.loc[r["problem_id"], "question"],  # type: ignore[union-attr]
                                 self.problems.loc[r["problem_id"], "answer"], list(r["steps"]),  # type: ignore[union-attr]
                                 finished=not is_unfinished(r.get("finish_reason"))) for r in ask]
            for row, mc in zip(ask, self.rollouts.localize(items)):  # type: ignore[union-attr]
                results[row["rollout_id"]] = {
                    "method": f"rollouts-{self.rollouts.search}", "error_step": mc.error_step,  # type: ignore[union-attr]
                    "status": mc.status, "votes": None,
                    "confidence": mc.mc.get(mc.error_step) if mc.error_step is not None else None,
                    "rationale": mc.rationale, "localizer_calls": mc.probes, "localizer_tokens": mc.tokens,
                    "error": mc.error,
                }
            ask = []
        if ask:
            for row, verdict in zip(ask, self.judge.localize([self._judge_item(r) for r in ask])):  # type: ignore[union-attr]
                error_step, status = _verdict(verdict.error_step, is_unfinished(row.get("finish_reason")))
                results[row["rollout_id"]] = {
                    "method": "judge", "error_step": error_step, "status": status, "votes": verdict.votes,
                    "confidence": verdict.confidence, "rationale": verdict.rationale,
                    "localizer_calls": verdict.calls, "localizer_tokens": verdict.tokens,
                    "error": verdict.error,  # a judge that failed is retried on resume
                }
        rows = [row | results[row["rollout_id"]] for row in records]
        return pd.DataFrame(rows, columns=LOCALIZED.names)

    @staticmethod
    def stats(localized: pd.DataFrame) -> dict[str, Any]:
        """Counts by status and method, cost, and, when the judge was asked, how many of its replies were read.

        ``localized`` counts rows with a first error (error_step >= 0); a row found
        error-free (-1) is ``no_error``, not localized.
        """
        if "status" in localized.columns:
            status = localized["status"].fillna("unknown")
        else:  # a table from before the status column
            status = localized["error_step"].map(status_of_error_step)
        found = status.eq("error")
        by_status = {s: int(status.eq(s).sum()) for s in LOCALIZE_STATUSES}
        methods = localized["method"].fillna("none").astype(str)
        stats: dict[str, Any] = {
            "localized": by_status["error"],
            "no_error": by_status["no_error"],
            "unknown": by_status["unknown"],
            "unfinished": by_status["unfinished"],
            "error_step_histogram": {int(k): int(v) for k, v in localized.loc[found, "error_step"].value_counts().sort_index().items()},
            "localizer_calls": int(localized["localizer_calls"].fillna(0).sum()),
            "localizer_tokens": int(localized["localizer_tokens"].fillna(0).sum()),
            "by_method": {str(k): int(v) for k, v in methods.value_counts().items()},
            "status_by_method": {m: {s: int(n) for s, n in status[methods == m].value_counts().items()}
                                 for m in methods.unique()},
            "error_rows": int(localized["error"].notna().sum()),
        }
        judged = localized[methods.eq("judge") & localized["localizer_calls"].fillna(0).gt(0)]
        if len(judged):
            stats["judge"] = judge_stats(judged)
        return stats


def judge_stats(judged: pd.DataFrame) -> dict[str, int]:
    """What the judge answered for the rows it was asked about: readable verdicts, unreadable replies, errors."""
    evidence = [judge_evidence(r) for r in judged["rationale"]]
    return {
        "asked": len(judged),
        "readable_verdicts": int(sum(bool(v is not None and len(v) > 0) for v in judged["votes"])),
        "unreadable_replies": int(sum(e["unreadable"] for e in evidence if e)),
        "errors": int(judged["error"].notna().sum()),
    }


def describe_judge(stats: dict[str, Any]) -> str:
    """The judge's line for a summary: "judge: 38 asked, 0 readable verdicts, 190 unreadable replies, 0 errors"."""
    judge = stats.get("judge") or {"asked": 0, "readable_verdicts": 0, "unreadable_replies": 0, "errors": 0}
    return (f"judge: {judge['asked']} asked, {judge['readable_verdicts']} readable verdicts, "
            f"{judge['unreadable_replies']} unreadable replies, {judge['errors']} errors")


def wrong_rollouts(rollouts: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rollouts to localize, and counts of the ones left out (and why)."""
    correct = rollouts["correct"]
    wrong = rollouts[correct.eq(False) & rollouts["error"].isna()]
    left_out = {
        "correct": int(correct.eq(True).sum()),
        "unjudged_or_failed": int(len(rollouts) - len(wrong) - correct.eq(True).sum()),
    }
    return wrong.reset_index(drop=True), left_out
