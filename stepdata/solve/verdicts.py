"""The verifier's say about one attempt: accepted, rejected at a step (with its score), undecided or failed.

Any registered localizer verifies: it finds the first step it doubts, which is what
StepCo's process verifier is asked. The localizer is built by name and options the way
the pair stages build their chosen-step checker (:class:`~stepdata.pipeline.verify.ChosenVerifier`),
and asked about every attempt of an iteration in one ``locate`` call.

How a localizer's answer reads as a verdict: "error" at step k is a rejection of step k;
"no_error" accepts; "unfinished" (no error in a solution cut at ``max_tokens``) rejects
its last step, since a cut solution gives no answer; "unknown" is undecided (nothing to
revise from: the attempt stands); a failure is the row's error (retried on resume).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from stepdata.localize.base import Localization, locate_checked, needs_of
from stepdata.pipeline.localize import solution_for
from stepdata.pipeline.verify import ChosenVerifier


@dataclass(frozen=True)
class Verdict:
    """What the verifier said about one attempt (``status``: accepted, rejected, undecided, failed)."""

    status: str
    step: int | None = None  # the rejected step, 0-based
    method: str = ""
    localizer_status: str | None = None
    score: float | None = None  # the attempt's score: a PRM's min or last step score, else 1 accepted / 0 rejected
    step_score: float | None = None  # the rejected step's own score (a PRM's)
    calls: int = 0
    tokens: int = 0
    error: str | None = None
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """The attempt's ``verdict`` record (JSON-able)."""
        return asdict(self) | {"note": None if self.note is None else self.note[:300]}

    @property
    def rank(self) -> float:
        """How best-of-n orders attempts: the score, an undecided one between accepted and rejected."""
        if self.score is not None:
            return self.score
        return 0.5 if self.status == "undecided" else 0.0


def step_scores(found: Localization) -> list[float] | None:
    """A PRM's per-step scores from its evidence (None when the verifier gives none)."""
    scores = (found.evidence or {}).get("step_scores")
    if not isinstance(scores, list) or not scores:
        return None
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        return None
    return [float(s) for s in scores]


def verdict_of(found: Localization, n_steps: int, aggregate: str = "min") -> Verdict:
    """A localizer's answer about an attempt of ``n_steps`` steps as a verdict (module doc)."""
    scores = step_scores(found)
    score = None if scores is None else (min(scores) if aggregate == "min" else scores[-1])
    base = {"method": found.method, "localizer_status": found.status, "calls": found.calls, "tokens": found.tokens,
            "note": found.note}
    if found.error is not None:
        return Verdict("failed", error=found.error, **base)
    if found.status == "error" and found.error_step is not None and found.error_step < n_steps:
        k = found.error_step
        step_score = scores[k] if scores is not None and k < len(scores) else None
        return Verdict("rejected", k, score=0.0 if score is None else score, step_score=step_score, **base)
    if found.status == "unfinished" and n_steps:
        return Verdict("rejected", n_steps - 1, score=0.0 if score is None else score, **base)
    if found.status == "no_error":
        return Verdict("accepted", score=1.0 if score is None else score, **base)
    return Verdict("undecided", score=score, **base)


@dataclass(frozen=True)
class Attempt:
    """What the verifier is shown: one attempt's steps and whether it ended (not cut at max_tokens)."""

    attempt_id: str
    problem_id: str
    steps: Sequence[str]
    finished: bool


class AttemptVerifier:
    """Verifies many attempts at once with the localizer the config names.

    ``generator`` returns the policy engine, called only when a model-based verifier (judge,
    rollouts) is first built; ``problems`` (indexed by problem_id) fills what the localizer reads.
    """

    def __init__(self, settings: Any, problems: pd.DataFrame, generator: Callable[[], Any] | None, *,
                 template: str, answer_policy: Any, aggregate: str = "min") -> None:
        self.checker = ChosenVerifier(settings, problems, generator, template=template, answer_policy=answer_policy)
        self.problems, self.aggregate = problems, aggregate

    @property
    def name(self) -> str:
        return self.checker.name

    def use_problems(self, problems: pd.DataFrame) -> None:
        """The problems (indexed by problem_id) the next attempts belong to; the built localizer is kept."""
        self.problems = self.checker.problems = problems

    def verify(self, attempts: Sequence[Attempt]) -> list[Verdict]:
        """One verdict per attempt, in order; an attempt with no steps is rejected at step 0 unasked, and a
        verifier that raises fails every attempt it was asked about (never the run)."""
        asked = [a for a in attempts if a.steps]
        try:
            localizer = self.checker.localizer
            # at inference a verifier sees no reference solution unless it declares it reads one (``needs``)
            hidden = {} if "reference" in needs_of(localizer) else {"reference": None}
            solutions = [dataclasses.replace(solution_for(self.problems, a.attempt_id, a.problem_id, list(a.steps),
                                                          finished=a.finished), **hidden) for a in asked]
            found = iter(locate_checked(localizer, solutions))
            verdicts = {a.attempt_id: verdict_of(next(found), len(a.steps), self.aggregate) for a in asked}
        except Exception as exc:  # noqa: BLE001 - a verifier crash is these rows' error, retried on resume
            failed = Verdict("failed", method=self.name, error=f"verify ({self.name}): {type(exc).__name__}: {exc}")
            verdicts = {a.attempt_id: failed for a in asked}
        empty = Verdict("rejected", 0, method=self.name, score=0.0, note="no steps: nothing to verify")
        return [verdicts.get(a.attempt_id, empty) for a in attempts]
