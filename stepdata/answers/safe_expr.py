"""Arithmetic on untrusted text without ``eval``.

Model output is untrusted, and sympy's ``parse_expr``/``sympify`` evaluate
Python. Here an expression is parsed by :mod:`ast` (which only builds a tree)
and walked over a whitelist: numbers, ``+ - * / ** %``, unary signs and
parentheses. Anything else (names, calls, attributes, subscripts) is refused.
Sizes are bounded (text length, tree depth, exponent and result size) so a
claim like ``9^9^9^9`` is refused instead of computed.

Two consumers: exact evaluation to :class:`fractions.Fraction` (the calculator
checks of the rules localizer) and a sympy tree built with ``evaluate=False``
(what Math-Verify's expression extraction would have built with ``parse_expr``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

MAX_EXPR_CHARS = 500
MAX_DEPTH = 60
MAX_EXPONENT = 256
MAX_RESULT_DIGITS = 400


class UnsafeExpression(ValueError):
    """The text is not a plain arithmetic expression we are willing to compute."""


_ALLOWED_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod)
_ALLOWED_UNARY = (ast.UAdd, ast.USub)
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def normalize_operators(text: str) -> str:
    """Map the operator spellings people and models use onto Python's."""
    return (
        text.replace("^", "**")
        .replace("×", "*")
        .replace("·", "*")
        .replace("÷", "/")
        .replace("−", "-")
        .replace("–", "-")
    )


def parse_arithmetic(text: str, *, caret_is_power: bool = True) -> ast.expr:
    """Parse ``text`` into a whitelisted AST, or raise UnsafeExpression."""
    if len(text) > MAX_EXPR_CHARS:
        raise UnsafeExpression(f"expression longer than {MAX_EXPR_CHARS} characters")
    source = normalize_operators(text) if caret_is_power else text
    source = _DIGIT_GROUPS.sub("", source).strip()
    if not source:
        raise UnsafeExpression("empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise UnsafeExpression(f"not an arithmetic expression: {exc.__class__.__name__}") from None
    _check(tree.body, 0)
    return tree.body


def _check(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsafeExpression("expression nested too deeply")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise UnsafeExpression(f"constant {node.value!r} is not a number")
        if isinstance(node.value, float) and node.value in (float("inf"), float("-inf")):
            raise UnsafeExpression("number out of range")
        return
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ALLOWED_BINOPS):
        _check(node.left, depth + 1)
        _check(node.right, depth + 1)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, _ALLOWED_UNARY):
        _check(node.operand, depth + 1)
        return
    raise UnsafeExpression(f"{type(node).__name__} is not allowed in arithmetic")


def _limit(value: Fraction) -> Fraction:
    if len(str(value.numerator)) > MAX_RESULT_DIGITS or len(str(value.denominator)) > MAX_RESULT_DIGITS:
        raise UnsafeExpression("intermediate result too large")
    return value


def _fraction_pow(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise UnsafeExpression("non-integer exponents are not computed exactly")
    if abs(exponent.numerator) > MAX_EXPONENT:
        raise UnsafeExpression("exponent too large")
    if base == 0 and exponent < 0:
        raise UnsafeExpression("zero to a negative power")
    # Bound the size before computing: digits(base**e) ~ e * digits(base).
    digits = max(len(str(base.numerator)), len(str(base.denominator)))
    if digits * abs(exponent.numerator) > MAX_RESULT_DIGITS:
        raise UnsafeExpression("power too large")
    return base ** exponent.numerator


def _eval_fraction(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant):
        # Exact decimal: Fraction("0.1") is 1/10, unlike Fraction(0.1).
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        value = _eval_fraction(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.BinOp)
    left, right = _eval_fraction(node.left), _eval_fraction(node.right)
    op = node.op
    if isinstance(op, ast.Add):
        return _limit(left + right)
    if isinstance(op, ast.Sub):
        return _limit(left - right)
    if isinstance(op, ast.Mult):
        return _limit(left * right)
    if isinstance(op, ast.Div):
        if right == 0:
            raise UnsafeExpression("division by zero")
        return _limit(left / right)
    if isinstance(op, ast.Mod):
        if right == 0:
            raise UnsafeExpression("modulo by zero")
        return _limit(left % right)
    return _limit(_fraction_pow(left, right))


def evaluate_exact(text: str, *, caret_is_power: bool = True) -> Fraction:
    """Compute ``text`` exactly as a Fraction, or raise UnsafeExpression."""
    return _eval_fraction(parse_arithmetic(text, caret_is_power=caret_is_power))


def to_sympy(text: str) -> Any:
    """Build the unevaluated sympy tree of ``text`` (Python operator syntax).

    Mirrors ``sympy.parse_expr(text, evaluate=False)`` for arithmetic, integers
    become Integer and decimals Float(from their text), without evaluating any
    Python: this is what we give Math-Verify in place of its ``parse_expr`` call.
    """
    import sympy

    source = _DIGIT_GROUPS.sub("", text).strip()
    tree = parse_arithmetic(source, caret_is_power=False)
    segments = _float_segments(source)

    def build(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, float):
                return sympy.Float(segments.pop(0) if segments else repr(node.value))
            return sympy.Integer(node.value)
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(operand, sympy.Number):
                return -operand
            return sympy.Mul(sympy.S.NegativeOne, operand, evaluate=False)
        left, right = build(node.left), build(node.right)
        op = node.op
        combine: dict[type, Callable[[Any, Any], Any]] = {
            ast.Add: lambda a, b: sympy.Add(a, b, evaluate=False),
            ast.Sub: lambda a, b: sympy.Add(a, sympy.Mul(sympy.S.NegativeOne, b, evaluate=False), evaluate=False),
            ast.Mult: lambda a, b: sympy.Mul(a, b, evaluate=False),
            ast.Div: lambda a, b: sympy.Mul(a, sympy.Pow(b, sympy.S.NegativeOne, evaluate=False), evaluate=False),
            ast.Pow: lambda a, b: sympy.Pow(a, b, evaluate=False),
            ast.Mod: lambda a, b: sympy.Mod(a, b, evaluate=False),
        }
        return combine[type(op)](left, right)

    return build(tree)


_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*|\.\d+)(?![\w.])")


def _float_segments(source: str) -> list[str]:
    """Decimal literals in source order, so Float keeps the digits as written."""
    return [m.group(1) for m in _FLOAT_LITERAL.finditer(source)]
