"""The exact localizer for embedded problems: every step checked against the gold steps.

An embedded problem's meta lists the value each gold step computes. A model's
step ``i`` is right when every arithmetic claim in it holds (the rules checker)
and the last value it computes equals gold step ``i``'s value; the first step
that fails is the first error. This is stricter than the rules alone, which
cannot see a true equation built on a wrong number ("5 * 9 = 45" where the
question said 8 bags). It assumes the model follows the gold plan one
computation a step, which is what the SFT warm-up teaches; a solution that
merges two computations into one step is counted wrong at that step, so the
check never calls a step right that is not.

A solution whose steps are all right but which stops before the last gold step
(or was cut at ``max_tokens``) has no first error to name: it is ``unfinished``
(error_step None), not an error one past its last step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from stepdata.answers import answers_match, extract_answer
from stepdata.answers.safe_expr import UnsafeExpression, evaluate_exact
from stepdata.localize.base import Localization, Solution, register_localizer
from stepdata.localize.rules import claims_in

_LAST_SIDE = re.compile(r"=\s*([^=]+)$")


@dataclass(frozen=True)
class StepCheck:
    """One step's verdict: right or not, and why."""

    index: int
    right: bool
    detail: str


def gold_values(meta: str | dict | None) -> list[int] | None:
    """Gold step values from an embedded problem's meta (None when it has none)."""
    if meta is None or (isinstance(meta, float)):
        return None
    data = json.loads(meta) if isinstance(meta, str) else meta
    steps = data.get("steps") if isinstance(data, dict) else None
    if not steps:
        return None
    return [int(s["value"]) for s in steps]


def stated_value(step: str) -> Fraction | None:
    """The value the step's last arithmetic claim arrives at (None when it states none)."""
    claims = claims_in(step)
    if not claims:
        return None
    match = _LAST_SIDE.search(claims[-1].text)
    if not match:
        return None
    try:
        return evaluate_exact(match.group(1).strip().rstrip(".").replace(",", ""))
    except (UnsafeExpression, ValueError, ZeroDivisionError):
        return None


def check_step(step: str, index: int, gold: Sequence[int]) -> StepCheck:
    """Whether model step ``index`` is right against the gold step values."""
    claims = claims_in(step)
    false = [c for c in claims if not c.holds]
    if false:
        return StepCheck(index, False, f"'{false[0].text}' is false ({false[0].detail})")
    if index >= len(gold):
        if claims:
            return StepCheck(index, False, f"computes past the {len(gold)} gold steps")
        return StepCheck(index, True, "no computation after the last gold step")
    value = stated_value(step)
    if value is None:
        return StepCheck(index, False, f"states no computation; gold step computes {gold[index]}")
    if value != gold[index]:
        return StepCheck(index, False, f"arrives at {value}, gold step arrives at {gold[index]}")
    return StepCheck(index, True, f"arrives at {gold[index]} as the gold step does")


class ExactVerdict(NamedTuple):
    """What the exact localizer found: the step (see ``status``), why, and the localized-table status.

    ``status`` is "error" (error_step >= 0), "no_error" (-1), "unknown" (None: the
    problem has no gold steps) or "unfinished" (None: every step it has is right but
    it stops early or was cut at max_tokens).
    """

    error_step: int | None
    rationale: str
    status: str


def exact_first_error(steps: Sequence[str], meta: Any, *, finished: bool = True) -> ExactVerdict:
    """The first wrong step against the gold steps (module doc); ``finished=False`` for a rollout cut at max_tokens."""
    gold = gold_values(meta)
    if gold is None:
        return ExactVerdict(None, "problem has no gold steps (not an embedded problem)", "unknown")
    for index, step in enumerate(steps):
        verdict = check_step(step, index, gold)
        if not verdict.right:
            return ExactVerdict(index, f"step {index}: {verdict.detail}", "error")
    if len(steps) < len(gold):
        return ExactVerdict(None, f"stops after {len(steps)} of {len(gold)} gold steps with no wrong step",
                            "unfinished")
    if not finished:
        return ExactVerdict(None, f"cut at max_tokens after {len(steps)} right steps", "unfinished")
    answer = extract_answer(steps[-1], last_number_fallback=False) if steps else None
    if answer is not None and not answers_match(str(gold[-1]), answer):
        return ExactVerdict(len(steps) - 1, f"step {len(steps) - 1}: states the answer {answer}, gold is {gold[-1]}",
                            "error")
    return ExactVerdict(-1, "every step matches the gold steps", "no_error")


@register_localizer("exact")
class ExactLocalizer:
    """:func:`exact_first_error` as a :class:`~stepdata.localize.base.Localizer` ("exact"); reads the problem's meta."""

    name = "exact"
    needs = ("meta",)

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        results = []
        for solution in solutions:
            found = exact_first_error(solution.steps, solution.meta, finished=solution.finished)
            certain = found.status in ("error", "no_error")  # checked against the gold steps, not estimated
            results.append(Localization(found.error_step, found.status, confidence=1.0 if certain else None,
                                        evidence={"check": found.rationale}, method=self.name, note=found.rationale))
        return results


def verify_step(step: str, index: int, meta: Any = None) -> bool | None:
    """Whether a step is right: against the gold steps when the problem has them, else by its arithmetic
    claims alone (True when all hold, False when one is false, None when it states none)."""
    gold = gold_values(meta)
    if gold is not None:
        return check_step(step, index, gold).right
    claims = claims_in(step)
    if not claims:
        return None
    return all(c.holds for c in claims)
