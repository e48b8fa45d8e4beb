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
The localizer is any registered one (:mod:`stepdata.localize.base`): the stage turns
rollouts (and their problems) into :class:`~stepdata.localize.base.Solution` s, asks
it once per batch, and writes its :class:`~stepdata.localize.base.Localization` s.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from stepdata.answers import is_unfinished
from stepdata.localize import make_localizer
from stepdata.localize.base import (
    Localization,
    Localizer,
    Solution,
    locate_checked,
    needs_of,
)
from stepdata.localize.judge import judge_evidence
from stepdata.schema import LOCALIZE_STATUSES, LOCALIZED, status_of_error_step


def _value(value: Any) -> Any:
    """A table cell, None for a missing one (pandas reads a null as NaN in some columns)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _steps(row: dict[str, Any]) -> list[str]:
    steps = row.get("steps")
    return [] if steps is None else list(steps)


class LocalizeStage:
    """Adds the localization columns to a batch of wrong rollouts (a stage's ``process``).

    ``localizer`` is a :class:`~stepdata.localize.base.Localizer` or a registered name,
    built with ``options`` (:func:`~stepdata.localize.make_localizer`: e.g. ``generator=``
    for the judge or the policy, ``rules_tolerance=``). A localizer that reads the
    question, gold answer, reference or meta (its ``needs``) gets them from
    ``problems`` (a problem listed twice is used once), which must then be given.
    """

    def __init__(self, localizer: str | Localizer = "rules", problems: pd.DataFrame | None = None,
                 **options: Any) -> None:
        if not isinstance(localizer, str) and options:
            raise ValueError(f"options {sorted(options)} are for building a localizer by name; this one is built")
        self.localizer = make_localizer(localizer, **options) if isinstance(localizer, str) else localizer
        self.needs = needs_of(self.localizer)
        if self.needs and problems is None:
            raise ValueError(f"localizer {self.localizer.name!r} needs the problems table "
                             f"(for the problems' {', '.join(sorted(self.needs))})")
        self.problems = problems.drop_duplicates("problem_id").set_index("problem_id") if problems is not None else None

    @property
    def method(self) -> str:
        """The localizer's name (what rows it could not be asked about record as their method)."""
        return self.localizer.name

    def _solution(self, row: dict[str, Any]) -> Solution:
        problem: dict[str, Any] = {}
        if self.problems is not None and row["problem_id"] in self.problems.index:
            problem = {k: _value(v) for k, v in self.problems.loc[row["problem_id"]].items()}
        correct = _value(row.get("correct"))
        return Solution(row["rollout_id"], row["problem_id"], problem.get("question"), _steps(row),
                        answer=problem.get("answer"), reference=problem.get("solution"), meta=problem.get("meta"),
                        finished=not is_unfinished(row.get("finish_reason")),
                        answer_correct=None if correct is None else bool(correct))

    @staticmethod
    def _columns(found: Localization) -> dict[str, Any]:
        return {"error_step": found.error_step, "status": found.status, "method": found.method, "votes": found.votes,
                "confidence": found.confidence, "rationale": found.rationale, "localizer_calls": found.calls,
                "localizer_tokens": found.tokens, "error": found.error}  # an error is retried on resume

    def __call__(self, rollouts: pd.DataFrame) -> pd.DataFrame:
        records = rollouts.to_dict("records")
        ask = [row for row in records if _steps(row)]
        if ask and self.needs:
            missing = sorted({r["problem_id"] for r in ask} - set(self.problems.index))  # type: ignore[union-attr]
            if missing:
                raise ValueError(f"problems table lacks problem_id(s) {missing[:5]} used by the rollouts")
        found = locate_checked(self.localizer, [self._solution(row) for row in ask])
        results = {row["rollout_id"]: self._columns(f) for row, f in zip(ask, found)}
        nothing = {"error_step": None, "status": "unknown", "method": self.method, "votes": None, "confidence": None,
                   "rationale": "no steps to check", "localizer_calls": 0, "localizer_tokens": 0}
        rows = [row | results.get(row["rollout_id"], nothing) for row in records]
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
