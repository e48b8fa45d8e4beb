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

from stepdata.localize.rules import localize_by_rules
from stepdata.schema import LOCALIZED

METHODS = ("rules",)


class LocalizeStage:
    """Adds the localization columns to a batch of wrong rollouts (a stage's ``process``)."""

    def __init__(self, method: str = "rules") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown localization method {method!r}; available: {list(METHODS)}")
        self.method = method

    def __call__(self, rollouts: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for row in rollouts.to_dict("records"):
            steps = row.get("steps") or []
            extra: dict[str, Any] = {"method": self.method, "votes": None, "localizer_calls": 0, "localizer_tokens": 0}
            if not steps:
                extra |= {"error_step": None, "confidence": None, "rationale": "no steps to check"}
            else:
                verdict = localize_by_rules(list(steps))
                extra |= {
                    "error_step": verdict.error_step,
                    "confidence": 1.0 if verdict.error_step is not None else None,
                    "rationale": verdict.rationale,
                }
            rows.append(row | extra)
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
