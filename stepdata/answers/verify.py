"""Deciding whether a predicted answer equals the gold one: parse, then verify.

Two paths, chosen per pair:

- **fast**: both sides are plain numbers (:mod:`stepdata.answers.numbers`);
  compared in-process in microseconds.
- **math-verify**: everything else (LaTeX, expressions, sets, intervals, free
  text); Math-Verify parses and compares, inside a worker process that is killed
  if it overruns ``timeout`` (:mod:`stepdata.answers.bounded`).

A check always returns a :class:`Verdict`; a time-out or a worker failure is a
verdict too (``status="timeout"``/``"error"``), logged and counted, never a hang
and never an exception out of a long run. Gold always comes first: the
comparison is not symmetric (``x = 2`` as gold accepts ``2``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stepdata.answers.bounded import BoundedPool, shared_pool
from stepdata.answers.numbers import (
    MATH_WORDS,
    normalize_answer_text,
    numbers_equal,
    parse_plain_number,
)

log = logging.getLogger(__name__)

WORKER_MODULE = "stepdata.answers.mathverify_worker"

_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
# LaTeX that holds letters without being words of prose: \text{...}, \begin{pmatrix}, ...
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_WORDS_ONLY = re.compile(r"^\s*[A-Za-z]{2,}(?:[ '\-]+[A-Za-z]+)*\s*$")
_PLAIN_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


@dataclass(frozen=True)
class AnswerCheckConfig:
    """How answers are compared; the Math-Verify settings mean what they mean there."""

    match_types: tuple[str, ...] = ("latex", "expr")
    precision: int = 6
    strict: bool = True
    allow_set_relation_comp: bool = False
    fast_path: bool = True
    timeout: float = 5.0
    max_chars: int = 20_000


DEFAULT_CONFIG = AnswerCheckConfig()


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: a match flag plus why."""

    match: bool
    status: str  # match | mismatch | no_answer | unparseable (the prediction) | bad_gold | timeout | too_long | error
    path: str  # exact | fast | math-verify | none
    detail: str = ""

    @property
    def judged(self) -> bool:
        """True when the pair was actually compared (not a time-out, error or missing answer)."""
        return self.status in ("match", "mismatch")


@dataclass
class CheckStats:
    """Counts per path and status, for run summaries."""

    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, verdict: Verdict) -> None:
        with self._lock:
            for key in (f"path:{verdict.path}", f"status:{verdict.status}"):
                self.counts[key] = self.counts.get(key, 0) + 1


STATS = CheckStats()


def as_math_verify_text(answer: str) -> str:
    """Present a bare answer to Math-Verify the way it reads answers best.

    LaTeX-looking answers ("\\frac{1}{2}", "(3, \\pi)", "x^2+1") are wrapped in
    ``$...$`` so they parse whole; an answer that is only words ("Evelyn",
    "east") is read as text; texts that already carry delimiters, or that mix
    words and numbers ("18 dollars", "28 percent"), are passed as they are.
    """
    if _WORDS_ONLY.match(answer) and not MATH_WORDS.intersection(answer.lower().split()):
        return f"$\\text{{{answer.strip()}}}$"
    if _DELIMITED.search(answer) or _PLAIN_WORD.search(_TEXT_COMMAND.sub(" ", answer)):
        return answer
    return f"${answer}$"


def _math_verify(gold: str, pred: str, config: AnswerCheckConfig, pool: BoundedPool) -> Verdict:
    result = pool.call(
        _worker_verify,
        as_math_verify_text(gold),
        as_math_verify_text(pred),
        config.match_types,
        config.precision,
        config.strict,
        config.allow_set_relation_comp,
        timeout=config.timeout,
    )
    if result.status == "timeout":
        log.warning("answer check timed out after %.1fs (gold %.60r, pred %.60r)", config.timeout, gold, pred)
        return Verdict(False, "timeout", "math-verify", result.error)
    if result.status == "error":
        log.warning("answer check failed: %s", result.error)
        return Verdict(False, "error", "math-verify", result.error)
    match, gold_ok, pred_ok = result.value
    if not gold_ok:
        return Verdict(False, "bad_gold", "math-verify", "gold answer could not be parsed")
    if not pred_ok:
        return Verdict(False, "unparseable", "math-verify", "predicted answer could not be parsed")
    return Verdict(match, "match" if match else "mismatch", "math-verify")


def _worker_verify(*args):
    from stepdata.answers.mathverify_worker import verify_texts

    return verify_texts(*args)


def check_answer(
    gold: str | None,
    pred: str | None,
    config: AnswerCheckConfig = DEFAULT_CONFIG,
    *,
    pool: BoundedPool | None = None,
) -> Verdict:
    """Compare ``pred`` with ``gold`` and say how (see module doc)."""
    verdict = _check(gold, pred, config, pool)
    STATS.add(verdict)
    return verdict


def _missing(value: object) -> bool:
    """None, NaN (pandas' missing value) or blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def _check(gold: str | None, pred: str | None, config: AnswerCheckConfig, pool: BoundedPool | None) -> Verdict:
    # the one place answers are normalized: every path below compares what this leaves
    gold = normalize_answer_text(gold) if isinstance(gold, str) else gold
    pred = normalize_answer_text(pred) if isinstance(pred, str) else pred
    if _missing(gold):
        return Verdict(False, "bad_gold", "none", "no gold answer")
    if _missing(pred):
        return Verdict(False, "no_answer", "none", "no predicted answer")
    gold, pred = str(gold), str(pred)
    if len(gold) > config.max_chars or len(pred) > config.max_chars:
        return Verdict(False, "too_long", "none", f"answer longer than {config.max_chars} characters")
    if gold.strip() == pred.strip():
        return Verdict(True, "match", "exact")
    if config.fast_path and "expr" in config.match_types:
        gold_number = parse_plain_number(gold)
        if gold_number is not None:
            pred_number = parse_plain_number(pred)
            if pred_number is not None:
                match = numbers_equal(gold_number, pred_number, config.precision)
                return Verdict(match, "match" if match else "mismatch", "fast")
    return _math_verify(gold, pred, config, pool or shared_pool([WORKER_MODULE]))


def answers_match(gold: str | None, pred: str | None, config: AnswerCheckConfig = DEFAULT_CONFIG) -> bool:
    """True when ``pred`` equals ``gold``; a time-out or failure counts as no match (and is logged)."""
    return check_answer(gold, pred, config).match


def check_answers(
    pairs: Iterable[tuple[str | None, str | None]],
    config: AnswerCheckConfig = DEFAULT_CONFIG,
    *,
    threads: int | None = None,
) -> list[Verdict]:
    """Check many (gold, pred) pairs, running slow-path checks in parallel workers."""
    pairs = list(pairs)
    pool = shared_pool([WORKER_MODULE])
    with ThreadPoolExecutor(max_workers=threads or pool.max_workers) as executor:
        return list(executor.map(lambda gp: check_answer(gp[0], gp[1], config, pool=pool), pairs))
