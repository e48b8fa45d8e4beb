"""The fast path: plain numeric answers compared exactly, in-process.

Most grade-school answers are a plain number dressed up a little ("$1,250.00",
"18 dollars", "45%", "\\frac{3}{4}"). Sending those through a LaTeX parser and a
computer-algebra system costs milliseconds each; reading them with one regular
expression and comparing :class:`~fractions.Fraction` values costs microseconds.

Only unambiguous spellings are accepted (thousands groups of exactly three digits,
no decimal commas, no scientific notation, bounded length). Anything else returns
``None`` and goes to Math-Verify, so the fast path never has to guess.

Comparison follows Math-Verify's numeric rules so verdicts agree: two exact values
(integers, fractions) must be equal; a decimal against a non-integer exact value, or
two decimals, are rounded to ``precision`` places; a decimal against an integer must
be equal exactly; ``p%`` also matches ``p/100``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction

MAX_FAST_CHARS = 120

# Words that look like units but are mathematics: never strip them as a unit.
MATH_WORDS = {
    "pi", "e", "i", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp",
    "inf", "infty", "infinity", "mod", "and", "or", "to", "of", "times", "plus", "minus",
    "over", "divided", "by", "x", "y", "z", "n", "k", "m",
}

_NUMBER = r"(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_PLAIN = re.compile(
    rf"""
    ^(?P<sign>-)?\s*
    (?:\\?\$\s*)?                                   # currency: $ or \$
    (?:
        (?P<num>{_NUMBER})
        (?:\s*/\s*(?P<den>\d+))?                    # a/b
      |
        \\[dt]?frac\{{\s*(?P<fnum>\d+)\s*\}}\{{\s*(?P<fden>\d+)\s*\}}
    )
    \s*(?P<pct>\\?%|\s+percent)?
    (?P<units>(?:\s*\\(?:text|mathrm|textbf)\{{[^{{}}\\]*\}}|\s+[A-Za-z]{{2,}}\.?){{0,3}})
    \s*$
    """,
    re.VERBOSE,
)
_UNIT_WORD = re.compile(r"[A-Za-z]+")

# Invisible characters that copy-pasted or model-written numbers carry: zero-width space, non-joiner and
# joiner, word joiner, a byte-order mark, a soft hyphen. They never change what a number is.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# Spaces that do not break a line: no-break, narrow no-break (French, SI), figure and thin space. Between a
# digit and a group of exactly three digits they separate thousands ("3 000"); anywhere else they are spaces.
NO_BREAK_SPACES = "\u00a0\u202f\u2007\u2009"
_ZERO_WIDTH = re.compile(f"[{ZERO_WIDTH}]")
_GROUP_SPACE = re.compile(f"(?<=\\d)[{NO_BREAK_SPACES}](?=\\d{{3}}(?!\\d))")
_NO_BREAK = re.compile(f"[{NO_BREAK_SPACES}]")


def normalize_answer_text(text: str) -> str:
    """An answer as every check compares it: zero-width characters removed, a no-break space between
    thousands groups removed (3, a no-break space, 000 is 3000) and any other no-break space made a plain space.

    ``check_answer`` applies it to gold and prediction alike before the exact, fast and
    Math-Verify paths, so 1, a zero-width space, 2 is 12 on every path.
    """
    text = _ZERO_WIDTH.sub("", text)
    return _NO_BREAK.sub(" ", _GROUP_SPACE.sub("", text))


@dataclass(frozen=True)
class PlainNumber:
    """A parsed plain number: its exact value and how it was written."""

    value: Fraction
    is_decimal: bool  # written with a decimal point (Math-Verify reads it as a Float)
    is_percent: bool


def _strip_wrappers(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == "$" and text[-1] == "$" and text.count("$") == 2:
        text = text[1:-1].strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def parse_plain_number(text: str) -> PlainNumber | None:
    """Read ``text`` as one plain number, or return None when it is anything else."""
    if not text or len(text) > MAX_FAST_CHARS:
        return None
    match = _PLAIN.match(_strip_wrappers(text))
    if match is None:
        return None
    units = match.group("units") or ""
    for word in _UNIT_WORD.findall(re.sub(r"\\(?:text|mathrm|textbf)", "", units)):
        if word.lower() in MATH_WORDS:
            return None
    negative = match.group("sign") is not None
    if match.group("fnum") is not None:
        numerator, denominator = int(match.group("fnum")), int(match.group("fden"))
        if denominator == 0:
            return None
        value, is_decimal = Fraction(numerator, denominator), False
    else:
        literal = match.group("num").replace(",", "")
        is_decimal = "." in literal
        value = Fraction(literal)
        if match.group("den") is not None:
            if is_decimal or int(match.group("den")) == 0:
                return None
            value /= int(match.group("den"))
    if negative:
        value = -value
    return PlainNumber(value=value, is_decimal=is_decimal, is_percent=match.group("pct") is not None)


def _round(value: Fraction, places: int) -> Decimal:
    try:
        return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
            Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN
        )
    except InvalidOperation:  # more digits than the context holds: compare exactly instead
        return Decimal(value.numerator) / Decimal(value.denominator)


def _values_equal(a: Fraction, a_decimal: bool, b: Fraction, b_decimal: bool, precision: int) -> bool:
    if not a_decimal and not b_decimal:
        return a == b
    if a_decimal and b_decimal:
        return _round(a, precision) == _round(b, precision)
    exact = b if a_decimal else a
    if exact.denominator == 1:  # decimal vs integer: Math-Verify requires equality
        return a == b
    return _round(a, precision) == _round(b, precision)


def numbers_equal(gold: PlainNumber, pred: PlainNumber, precision: int = 6) -> bool:
    """Whether ``pred`` states the same number as ``gold`` (percent read both ways)."""
    golds = [gold.value] + ([gold.value / 100] if gold.is_percent else [])
    preds = [pred.value] + ([pred.value / 100] if pred.is_percent else [])
    return any(_values_equal(g, gold.is_decimal, p, pred.is_decimal, precision) for g in golds for p in preds)
