"""What the calculator writes after an arithmetic expression's "=", computed exactly (never ``eval``).

Calculator decoding (:mod:`stepdata.generation.calculator_decoding`) asks this module, for
each "=" in a model's text, whether the text before it ends in an expression we compute and,
if so, what result must follow it and whether the model's own text there already says it.

Which "=" counts
    The text before it must end in an arithmetic expression: numbers (digit groups
    ``1,200``, decimals, a ``$`` sign), ``+ - * / × ÷``, ``x`` between two numbers, and
    parentheses, with at least one operator, e.g. ``3 + 4 * 2 =`` (a chain: precedence as
    written), ``(1.5 + 2.25) / 3 =``, and GSM8K's ``<<48/2=``. Its value is computed by the
    safe evaluator (:func:`stepdata.answers.safe_expr.evaluate_exact`, a whitelisted AST, no
    ``eval``). An expression must be read whole: one that continues a phrase ("half of
    50 =", "x + 3 =", "3 \\times 4 ="), that follows a number or an operator, or that holds
    ``**`` or ``%`` is not computed; nor is "x = 5" (no operator) or the second "=" of
    "==", "<=", ">=", "!=". Only the text before the "=" decides, as for a calculator that
    stops the model at each "=": "3 + 4 ==" gets its result after the first "=".
    An expression the evaluator refuses (too long, a result of more than 400 digits,
    division by zero) is left to the model.

What is written (``format_number``)
    Exactly the value: an integer as an integer (``3 + 4 * 2 = 11``); a finite decimal as
    its decimal (``1.5 + 2.25 = 3.75``, ``1 / 8 = 0.125``) when it has at most
    :data:`MAX_EXACT_PLACES` places; anything else (a division that does not terminate,
    ``10 / 3``) rounded half away from zero to :data:`ROUND_PLACES` places, trailing zeros
    kept, so the text says it is a rounding (``10 / 3 = 3.3333``, ``2 / 3 = 0.6667``) and
    the rules localizer's "written precision" check accepts it. After an expression the
    result is the number with the model's own spacing and ``$`` sign (or one space when
    the "=" has one before it and the model wrote no number); in GSM8K's ``<<48/2=`` form
    the calculator writes ``24>>`` and the model goes on after the note.

Whether the model already wrote it
    The model's number after "=" (spacing and ``$`` skipped, digit groups read) agrees when
    its value equals the value of what the calculator writes (``7``, ``7.0``, ``7.00`` for
    7; ``3.3333`` for 10 / 3, not ``3.33``); in the ``<<`` form it must be followed by
    ``>>``. An agreeing number stands as the model wrote it; anything else (another number,
    words, the text ending there) is replaced from the number on.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from stepdata.answers.safe_expr import (
    MAX_EXPR_CHARS,
    UnsafeExpression,
    evaluate_exact,
    parse_arithmetic,
)

ROUND_PLACES = 4
"""Places a result that is not a short finite decimal is rounded to (half away from zero)."""
MAX_EXACT_PLACES = 10
"""A finite decimal with more places than this is rounded too (``1 / 2**20`` is 20 places)."""

_RUN_CHARS = frozenset("0123456789.,()+-*/÷$ \t")
_STARTS = frozenset("0123456789($-")
_NUMBER_CHARS = frozenset("0123456789.,$")
# "x" or "×" between a number (or a closing parenthesis) and a number is a product; same length as "*"
_TIMES = re.compile(r"(?<=[\d)])([ \t]*)[x×]([ \t]*)(?=[\d($])")
# words after which an expression is the tail of a phrase we cannot read ("half of 10 + 4")
_CONNECTORS = frozenset({"of", "by", "times", "than", "per", "divided", "multiplied", "plus", "minus", "over",
                         "into", "cdot", "div", "frac", "sqrt"})
_WRITTEN = re.compile(r"([ \t]{0,3})(\$?)(-?\d+(?:,\d{3})*(?:\.\d+)?)")
_NOTE_WRITTEN = re.compile(r"(-?\d+(?:,\d{3})*(?:\.\d+)?)>>")


@dataclass(frozen=True)
class Result:
    """The calculator's result for one "=": the expression it read, its exact value and the text it writes."""

    expression: str
    value: Fraction
    text: str  # the number as written (format_number)
    note: bool  # GSM8K's <<expr= form: ">>" follows the number
    lead: str  # what goes between "=" and the number when the model wrote no number of its own

    @property
    def written(self) -> str:
        """The calculator's whole text after "=" when the model wrote no number: spacing, number, ``>>``."""
        return self.lead + self.text + (">>" if self.note else "")


@dataclass(frozen=True)
class Review:
    """What the model's text after an expression's "=" gets: it stands (``agrees``) up to ``end`` characters,
    or it is cut after ``keep`` characters (its own spacing and ``$``) and the calculator's ``write`` follows."""

    agrees: bool
    end: int = 0
    keep: int = 0
    write: str = ""


def format_number(value: Fraction) -> str:
    """``value`` as the calculator writes it (module doc): exact when an integer or a short finite decimal,
    else rounded half away from zero to :data:`ROUND_PLACES` places."""
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if magnitude.denominator == 1:
        return sign + str(magnitude.numerator)
    places = _finite_places(magnitude.denominator)
    if places is None or places > MAX_EXACT_PLACES:
        places = ROUND_PLACES
        scaled = int(magnitude * 10**places + Fraction(1, 2))  # floor(x + 1/2): half away from zero
    else:
        scaled = int(magnitude * 10**places)
    if scaled == 0:
        sign = ""
    whole, part = divmod(scaled, 10**places)
    return f"{sign}{whole}.{part:0{places}d}"


def _finite_places(denominator: int) -> int | None:
    """Decimal places of p/denominator in lowest terms when it terminates (denominator 2^a 5^b), else None."""
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    return max(twos, fives) if denominator == 1 else None


def _number_value(text: str) -> Fraction:
    return Fraction(text.replace(",", "").replace("$", ""))


def _context_allows(before: str) -> bool:
    """Whether an expression may start right after ``before`` (it is not the tail of a phrase or a number)."""
    stripped = before.rstrip(" \t")
    if not stripped:
        return True
    spaced = len(stripped) < len(before)
    last = stripped[-1]
    if last.isalpha():
        word = re.search(r"[^\W\d_]+$", stripped).group(0)  # type: ignore[union-attr]
        return spaced and len(word) > 1 and word.lower() not in _CONNECTORS and not stripped[:-len(word)].endswith("\\")
    if last.isdigit():
        return False
    if last in ".,":
        return spaced  # the end of a sentence or a clause, not a decimal point or a digit group
    if stripped.endswith("**"):  # markdown bold ("**Step 1:** 3 + 4 ="), not a power
        return len(stripped) == 2 or stripped[-3] not in "0123456789)"
    return last not in "+-*/^×÷%)]}_\\|&·"


def _plain_arithmetic(tree: ast.expr) -> bool:
    """A binary operation of + - * / (at its root), with no power or remainder anywhere in it."""
    if not (isinstance(tree, ast.BinOp) and isinstance(tree.op, (ast.Add, ast.Sub, ast.Mult, ast.Div))):
        return False
    return not any(isinstance(node, (ast.Pow, ast.Mod)) for node in ast.walk(tree))


def result_before(text: str, equals: int) -> Result | None:
    """The calculator's result for the "=" at ``text[equals]``, or None when the text before it does not end in
    an expression it computes (module doc) or the evaluator refuses it (then the model's own text stands)."""
    if text[equals] != "=" or text[equals - 1 : equals] in ("=", "<", ">", "!"):
        return None  # decided by the text before the "=" alone, as a calculator that stops there would
    window = max(0, equals - MAX_EXPR_CHARS - 1)
    tail = _TIMES.sub(lambda m: m.group(1) + "*" + m.group(2), text[window:equals])
    start = len(tail)
    while start > 0 and tail[start - 1] in _RUN_CHARS:
        start -= 1
    if start == 0 and window > 0:
        return None  # longer than any expression we compute: left to the model
    for i in range(start, len(tail)):
        if tail[i] not in _STARTS or (i > start and tail[i - 1] in _NUMBER_CHARS):
            continue  # an expression starts at a number, a sign or a parenthesis, never inside a number
        expression = tail[i:].rstrip(" \t")
        try:
            tree = parse_arithmetic(expression.replace("$", ""))
        except UnsafeExpression:
            continue
        if not _plain_arithmetic(tree):
            continue
        before = text[: window + i]
        if not _context_allows(before):
            return None
        try:
            value = evaluate_exact(expression.replace("$", ""))
        except (UnsafeExpression, ZeroDivisionError, OverflowError, ValueError):
            return None  # e.g. a result too large for the evaluator: the model's own text stands
        note = before.endswith("<<")
        lead = "" if note or text[equals - 1] not in " \t" else " "
        return Result(text[window + i : equals].strip(), value, format_number(value), note, lead)
    return None


def review(result: Result, after: str) -> Review:
    """Whether the model's text ``after`` the "=" already gives ``result`` (module doc); if not, where it is cut
    and what the calculator writes there."""
    target = _number_value(result.text)
    if result.note:
        match = _NOTE_WRITTEN.match(after)
        if match and _number_value(match.group(1)) == target:
            return Review(True, end=match.end())
        return Review(False, keep=0, write=result.text + ">>")
    match = _WRITTEN.match(after)
    if match is None:
        return Review(False, keep=0, write=result.lead + result.text)
    if _number_value(match.group(3)) == target and not re.match(r"\d|\.\d", after[match.end():]):
        return Review(True, end=match.end())
    return Review(False, keep=match.start(3), write=result.text)
