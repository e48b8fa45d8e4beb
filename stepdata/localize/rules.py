"""The rules localizer: the first step that states false arithmetic, found with no model.

Each step is scanned for arithmetic claims: GSM8K calculator notes
``<<48/2=24>>`` and written equations, including chains (``2 * 3 + 4 = 6 + 4 = 10``).
Every side is computed exactly (:func:`stepdata.answers.safe_expr.evaluate_exact`,
never ``eval``) and a claim is false when two sides differ by more than the
written precision allows. Two tolerances (``tolerance=``):

- ``"written"`` (the default): a claim holds when it is exactly true, or true to
  the decimals the step itself writes. ``10 / 4 = 2.5`` and ``16 / 3 = 5.33``
  hold (two decimals written, 5.333... rounds to 5.33); ``16 / 3 = 5`` does not:
  an integer written for a value that is not one is a wrong step ("10 / 3 = 3
  liters" must not pass as a verified chosen step).
- ``"rounded"``: an integer may also be a rounding (``16 / 3 = 5`` holds), for
  text that rounds silently (counts of people, money to the dollar).

Precision comes first: a claim is checked only when it can be read without
guessing. An equation whose left side is the tail of a longer phrase
("half of 50 = 25", "x + 3 = 5") or touches a variable is skipped, so a correct
solution is almost never flagged. Finding no false claim is reported as -1 ("no
error found", ProcessBench's answer for a clean solution): it is a prediction,
not a proof, since rules cannot see an error that is not false arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from stepdata.answers.safe_expr import MAX_EXPR_CHARS, UnsafeExpression, evaluate_exact
from stepdata.localize.base import (
    Localization,
    Solution,
    register_localizer,
    status_for,
)

TOLERANCES = ("written", "rounded")
Tolerance = Literal["written", "rounded"]

_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
# One flat character class (no nested quantifiers): linear even on a 100 kB step.
_ARITHMETIC_RUN = re.compile(r"[\d.,$()+\-*/^%\s=]+")
_LATEX = [
    (re.compile(r"\\(?:times|cdot)"), "*"),
    (re.compile(r"\\div"), "/"),
    (re.compile(r"\\d?frac\{(\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}"), r"(\1/\2)"),
    (re.compile(r"\^\{(\d+)\}"), r"^\1"),
    (re.compile(r"\\left|\\right|\\[()\[\]]|\\,|\\!|\\ "), ""),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"(?<=\d)\s*[x×·]\s*(?=\$?\d)"), " * "),
    (re.compile(r"÷"), "/"),
    (re.compile(r"[−–]"), "-"),
]
_OPERATOR = re.compile(r"\d\s*[-+*/^%]\s*[\d($]|\)\s*[-+*/^]|[-+*/^]\s*\(")


@dataclass(frozen=True)
class Claim:
    """One checked equation: its sides as written, and whether they agree."""

    text: str
    holds: bool
    detail: str


def _normalize(text: str) -> str:
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    return text


def _clean_side(side: str) -> str:
    side = side.strip().replace("$", "").strip()
    side = side.rstrip(".,").strip()
    # drop unmatched outer parentheses left by the surrounding sentence
    while side.startswith("(") and side.count("(") > side.count(")"):
        side = side[1:].strip()
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1].strip()
    return re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", side)


def _decimals(side: str) -> int | None:
    """Places written after the point, when the side is a plain number (its stated precision)."""
    match = re.fullmatch(r"-?[\d,]*\.(\d+)", side.strip())
    return len(match.group(1)) if match else (0 if re.fullmatch(r"-?[\d,]+", side.strip()) else None)


def _agree(a: Fraction, b: Fraction, b_text: str, tolerance: Tolerance) -> bool:
    """Whether value ``a`` may be written as ``b_text`` (value ``b``) under ``tolerance``."""
    if a == b:
        return True
    places = _decimals(b_text)
    if places is None:  # b is an expression: it must be exact
        return False
    if places == 0 and tolerance == "written":
        return False  # an integer written for a non-integer value states no rounding
    return abs(a - b) <= Fraction(1, 2) * Fraction(1, 10**places)


def _context_is_partial(text: str, start: int, first_side: str) -> bool:
    """True when the left side continues a phrase we cannot read ("half of 50", "x + 3")."""
    before = text[:start].rstrip() if start >= 0 else ""
    stripped = first_side.strip()
    if not stripped or stripped[0] in "+*/^" or re.match(r"-\s", stripped):
        return True
    if not before:
        return False
    last = before[-1]
    if last in ")}]{[_\\|" or last in "+-*/^=<>" or re.search(r"\\[A-Za-z]+$", before):
        return True
    if last.isalpha():
        word = re.search(r"([^\W\d_]+)$", before).group(1)  # type: ignore[union-attr]
        if len(word) == 1 or word.lower() in {"of", "by", "times", "than", "per", "divided", "multiplied", "plus", "minus"}:
            return True
        return not _OPERATOR.search(stripped)  # "has 12 + 5 = 17" reads whole; "is 50 = 25" does not
    return False


_CONTINUATION_WORDS = {"remainder", "rem", "r", "with", "mod", "modulo", "base", "times", "of"}


def _continues(after: str, last_char: str) -> bool:
    """True when the right side goes on in a way we cannot compute ("= 4\\pi", "= 17x", "= 7 remainder 3")."""
    if after[:1].isalpha() and not last_char.isspace():
        return True  # "= 17x"
    rest = after.lstrip()
    if rest[:1] in ("\\", "_", "^", "{", "(", "!"):
        return True
    word = re.match(r"([A-Za-z]+)", rest)
    return bool(word) and (len(word.group(1)) == 1 or word.group(1).lower() in _CONTINUATION_WORDS)


def _check_chain(sides_text: list[str], tolerance: Tolerance) -> Claim | None:
    if any(len(s) > MAX_EXPR_CHARS for s in sides_text):
        return None  # longer than any expression we compute: skip before cleaning (keeps this linear)
    sides = [_clean_side(s) for s in sides_text]
    if any(not s for s in sides) or not any(_OPERATOR.search(s) for s in sides):
        return None
    try:
        values = [evaluate_exact(s) for s in sides]
    except (UnsafeExpression, ZeroDivisionError, ValueError, OverflowError):
        return None
    text = " = ".join(s.strip() for s in sides_text)
    for left, right, right_text in zip(values, values[1:], sides[1:]):
        if not (_agree(left, right, right_text, tolerance) or _agree(right, left, sides[0], tolerance)):
            return Claim(text, False, f"{float(left):g} != {float(right):g}")
    return Claim(text, True, "")


def _check_tolerance(tolerance: str) -> None:
    if tolerance not in TOLERANCES:
        raise ValueError(f"unknown rules tolerance {tolerance!r}; expected one of {list(TOLERANCES)}")


def claims_in(step: str, tolerance: Tolerance = "written") -> list[Claim]:
    """Every arithmetic claim in ``step`` that can be read unambiguously, checked (``tolerance``: module doc)."""
    _check_tolerance(tolerance)
    claims: list[Claim] = []
    for match in _ANNOTATION.finditer(step):
        claim = _check_chain([match.group(1), match.group(2)], tolerance)
        if claim is not None:
            claims.append(claim)
    text = _normalize(_ANNOTATION.sub(" ", step))
    for run in _ARITHMETIC_RUN.finditer(text):
        chunk = run.group(0)
        if "=" not in chunk or "==" in chunk or not any(c.isdigit() for c in chunk):
            continue
        sides = chunk.split("=")
        start = run.start() + len(chunk) - len(chunk.lstrip())
        if not sides[0].strip():
            # "x = 3 + 4 = 7": the left side is not arithmetic; the rest of the chain still is
            sides = sides[1:]
            start = -1
        elif _context_is_partial(text, start, sides[0]):
            continue
        if len(sides) < 2 or _continues(text[run.end():], text[run.end() - 1]):
            continue
        claim = _check_chain(sides, tolerance)
        if claim is not None:
            claims.append(claim)
    return claims


@dataclass(frozen=True)
class RulesVerdict:
    """The first step with a false claim, -1 when none is false, None when there are no steps; and why."""

    error_step: int | None
    rationale: str
    claims_checked: int
    claim: Claim | None = None  # the false claim, when one was found


def localize_by_rules(steps: list[str], tolerance: Tolerance = "written") -> RulesVerdict:
    """Check every step's arithmetic; report the first step whose claim is false.

    -1 means no false claim was found (a prediction of "no error", not a proof);
    None means there was nothing to check (no steps).
    """
    _check_tolerance(tolerance)
    if not steps:
        return RulesVerdict(None, "no steps to check", 0)
    checked = 0
    for index, step in enumerate(steps):
        for claim in claims_in(step, tolerance):
            checked += 1
            if not claim.holds:
                return RulesVerdict(index, f"step {index}: '{claim.text}' is false ({claim.detail})", checked, claim)
    return RulesVerdict(-1, f"no false claim in {checked} checked", checked)


class RulesLocalizer:
    """The rules as a :class:`~stepdata.localize.base.Localizer` ("rules").

    No false claim is a prediction of "no error" (-1, ProcessBench's answer for a clean
    solution), except where it cannot be: in a solution cut at max_tokens it is
    "unfinished", and in one whose answer is known to be wrong (a wrong rollout) some
    step is wrong that the rules cannot see, so it is "unknown".
    """

    name = "rules"
    needs: tuple[str, ...] = ()

    def __init__(self, tolerance: Tolerance = "written") -> None:
        _check_tolerance(tolerance)
        self.tolerance = tolerance

    def locate_one(self, solution: Solution) -> Localization:
        """The rules' answer for one solution (they cost nothing, so there is nothing to batch)."""
        verdict = localize_by_rules(list(solution.steps), self.tolerance)
        error_step, status = status_for(verdict.error_step, solution.finished)
        if status == "no_error" and solution.answer_correct is False:
            error_step, status = None, "unknown"
        evidence: dict = {"claims_checked": verdict.claims_checked}
        if verdict.claim is not None:
            evidence |= {"false_claim": verdict.claim.text, "detail": verdict.claim.detail}
        note = verdict.rationale + ("; cut at max_tokens" if status == "unfinished" else "")
        return Localization(error_step, status, confidence=1.0 if status == "error" else None, evidence=evidence,
                            method=self.name, note=note)

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        return [self.locate_one(solution) for solution in solutions]


@register_localizer("rules")
def make_rules(rules_tolerance: Tolerance = "written") -> RulesLocalizer:
    """The "rules" localizer; ``rules_tolerance`` is the precision mode (module doc)."""
    return RulesLocalizer(rules_tolerance)
