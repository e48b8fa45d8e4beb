"""Math-Verify, run inside a bounded worker process, with no ``eval`` of model text.

Math-Verify's expression extraction hands the matched text to sympy's
``parse_expr``, which evaluates Python. In our workers that one function is
replaced by :func:`stepdata.answers.safe_expr.to_sympy`, which builds the same
unevaluated sympy tree from a whitelisted AST. Math-Verify's own ``signal``-based
time-outs are switched off: the worker is killed from outside instead.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import math_verify.parser as _mv_parser
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from stepdata.answers.safe_expr import to_sympy

logging.getLogger("math_verify").setLevel(logging.ERROR)

_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")


@lru_cache(maxsize=256)
def _safe_parse_expr(expr: str) -> Any:
    return to_sympy(_LEADING_ZEROS.sub("", expr))


_mv_parser.parse_expr_cached = _safe_parse_expr


@lru_cache(maxsize=16)
def _extraction_config(match_types: tuple[str, ...], boxed_first: bool) -> tuple:
    targets: list[Any] = []
    for kind in match_types:
        if kind == "latex":
            targets.append(LatexExtractionConfig(boxed_match_priority=0) if boxed_first else LatexExtractionConfig())
        elif kind == "expr":
            targets.append(ExprExtractionConfig())
        else:
            raise ValueError(f"unknown match type {kind!r}; expected 'latex' or 'expr'")
    return tuple(targets)


def _parse(text: str, match_types: tuple[str, ...], boxed_first: bool) -> tuple:
    return tuple(parse(text, _extraction_config(match_types, boxed_first), parsing_timeout=None))


# A gold answer is checked against every sample of its problem: parse it once.
_parse_gold = lru_cache(maxsize=4096)(_parse)


def verify_texts(
    gold: str,
    pred: str,
    match_types: tuple[str, ...],
    precision: int,
    strict: bool,
    allow_set_relation_comp: bool,
) -> tuple[bool, bool, bool]:
    """Parse both texts and compare them; returns (match, gold_parsed, pred_parsed)."""
    gold_parsed = _parse_gold(gold, match_types, True)
    pred_parsed = _parse(pred, match_types, True)
    if not gold_parsed or not pred_parsed:
        return False, bool(gold_parsed), bool(pred_parsed)
    match = verify(
        list(gold_parsed),
        list(pred_parsed),
        float_rounding=precision,
        strict=strict,
        allow_set_relation_comp=allow_set_relation_comp,
        timeout_seconds=None,
    )
    return bool(match), True, True
