"""The answer policy: how one model completion becomes a label.

Every stage that labels model text (sample, the rollouts localizer, rectify,
synthesize, eval) goes through one :class:`AnswerPolicy`, so no two stages can
disagree about the same text. Three decisions live here and nowhere else:

- **Unfinished is not an answer.** A completion cut at ``max_tokens``
  (``finish_reason == "length"``) is ``unfinished``: never correct, never a chosen
  side, never the end of a solution, whatever it said before the cut.
- **An answer must be stated.** Model text states an answer only through an
  explicit form (``\\boxed{}``, "The answer is ...", ``#### N``). The last-number
  fallback would read ``"Step 5: Let me"`` as 5 and ``"7 * 2 ="`` as 2, so it is
  off for model text; ``last_number_fallback=True`` keeps it for users who want it.
- **A wrong answer is not an error.** A prediction that cannot be parsed
  (``\\boxed{\\text{}}``) is a wrong answer with its reason. Only a gold answer that
  is missing or unreadable (``bad_gold``), or a check that timed out or failed
  (``check_failed``), leaves the label unknown: such rows carry an ``error`` and are
  retried when a run resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepdata.answers.extract import extract_answer
from stepdata.answers.verify import (
    DEFAULT_CONFIG,
    AnswerCheckConfig,
    Verdict,
    check_answers,
)

# Every outcome a label can have. correct/wrong/no_answer/unfinished are labels;
# check_failed/bad_gold are unknowns (correct is null, error is set).
LABEL_OUTCOMES = ("correct", "wrong", "no_answer", "unfinished", "check_failed", "bad_gold")
LENGTH = "length"


@dataclass(frozen=True)
class Label:
    """What the policy decided about one completion, and why."""

    outcome: str
    pred_answer: str | None
    detail: str = ""
    verdict: Verdict | None = field(default=None, compare=False)

    @property
    def correct(self) -> bool | None:
        """True/False for a label; None when it could not be decided (see ``error``)."""
        if self.outcome in ("check_failed", "bad_gold"):
            return None
        return self.outcome == "correct"

    @property
    def finished(self) -> bool:
        return self.outcome != "unfinished"

    @property
    def error(self) -> str | None:
        """The row error for an undecided label (retried on resume), None otherwise."""
        if self.outcome == "check_failed":
            return f"answer_check: {self.detail}"
        if self.outcome == "bad_gold":
            return f"gold_answer: {self.detail}"
        return None


def is_unfinished(finish_reason: str | None) -> bool:
    """A completion cut at the token limit; None (an old table, an unknown backend) counts as finished."""
    return finish_reason == LENGTH


@dataclass(frozen=True)
class AnswerPolicy:
    """One way to read and judge model answers, shared by every stage of a run."""

    last_number_fallback: bool = False
    check: AnswerCheckConfig = DEFAULT_CONFIG

    @classmethod
    def with_options(cls, *, timeout: float = 5.0, last_number_fallback: bool = False) -> AnswerPolicy:
        """The policy from a stage's options (answer-check time bound, fallback switch)."""
        return cls(last_number_fallback=last_number_fallback, check=AnswerCheckConfig(timeout=timeout))

    def extract(self, text: str | None) -> str | None:
        """The answer the text states, or None."""
        return extract_answer(text, last_number_fallback=self.last_number_fallback)

    def label(self, gold: Any, text: str | None, finish_reason: str | None = "stop") -> Label:
        return self.label_many([(gold, text, finish_reason)])[0]

    def label_many(self, items: Sequence[tuple[Any, str | None, str | None]]) -> list[Label]:
        """Label many (gold, completion text, finish_reason) at once; slow answer checks run in parallel."""
        labels: list[Label | None] = [None] * len(items)
        to_check: list[tuple[int, Any, str]] = []
        for index, (gold, text, finish_reason) in enumerate(items):
            if is_unfinished(finish_reason):
                labels[index] = Label("unfinished", None, "cut at max_tokens before the solution ended")
                continue
            answer = self.extract(text)
            if answer is None:
                labels[index] = Label("no_answer", None, "states no answer (\\boxed{}, 'The answer is', '#### N')")
                continue
            to_check.append((index, gold, answer))
        verdicts = check_answers([(g, a) for _, g, a in to_check], self.check)
        for (index, _, answer), verdict in zip(to_check, verdicts):
            labels[index] = _from_verdict(answer, verdict)
        return [label for label in labels if label is not None]

    def describe(self) -> dict[str, Any]:
        """The settings that change labels, for run configs and table metadata."""
        return {"last_number_fallback": self.last_number_fallback, "answer_timeout": self.check.timeout}


def _from_verdict(answer: str, verdict: Verdict) -> Label:
    if verdict.status == "match":
        return Label("correct", answer, verdict.path, verdict)
    if verdict.status in ("mismatch", "unparseable", "too_long"):
        return Label("wrong", answer, verdict.detail or verdict.status, verdict)
    if verdict.status == "no_answer":
        return Label("no_answer", answer, verdict.detail, verdict)
    if verdict.status == "bad_gold":
        return Label("bad_gold", answer, verdict.detail, verdict)
    return Label("check_failed", answer, f"{verdict.status} ({verdict.detail})", verdict)


def count_outcomes(labels: Sequence[Label]) -> dict[str, int]:
    """Labels counted by outcome (every outcome present, zeros included), for summaries."""
    counts = dict.fromkeys(LABEL_OUTCOMES, 0)
    for label in labels:
        counts[label.outcome] += 1
    return counts
