"""The judge localizer: an LLM names the first wrong step; k samples, majority vote.

Two protocols, each a template in ``prompts/``:

- ``judge_processbench``: paragraphs tagged with their 0-based index, the answer is
  the index in ``\\boxed{}`` (-1: no error). The last boxed value is read.
- ``judge_stepdpo``: the reference solution is shown and the judge writes one
  verdict per step ("Step k: correct / incorrect / neutral"); the first incorrect
  or neutral step counts, as in Step-DPO's data recipe.

A reply that cannot be read (no box, not an integer, an index out of range, no
verdict lines) is recorded as unreadable and never guessed; the vote is taken over
the readable replies (:func:`majority_vote`). Ties go to the earliest real step:
"no error" (-1) wins only with a strict plurality, because a split between "fine"
and "step k" is doubt about step k, not agreement that the solution is right.
Every raw reply is kept in the verdict's evidence, so a judge that could not be
read (a wrong template, a model that never boxes) shows up in the data instead of
passing for "no error found".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepdata.answers.extract import last_boxed
from stepdata.generation import GenerationRequest, Generator, SamplingConfig
from stepdata.localize.base import (
    Fallback,
    Localization,
    Solution,
    register_localizer,
    status_for,
)
from stepdata.localize.rules import RulesLocalizer, Tolerance
from stepdata.prompts import load_prompt
from stepdata.steps import step_body

PROTOCOLS = ("processbench", "stepdpo")
_VERDICT = re.compile(r"step\s*(\d+)\s*[:\-.)]?\s*\**\s*(correct|incorrect|neutral)", re.IGNORECASE)


def parse_boxed_index(reply: str, n_steps: int) -> int | None:
    """The index in the reply's last \\boxed{} if it is -1 or a valid step index, else None."""
    boxed = last_boxed(reply or "")
    if boxed is None:
        return None
    match = re.fullmatch(r"\s*(-?\d+)\s*", boxed)
    if match is None:
        return None
    index = int(match.group(1))
    return index if -1 <= index < n_steps else None


def parse_step_verdicts(reply: str, n_steps: int) -> int | None:
    """First step judged incorrect or neutral (0-based), -1 if all judged correct, None if unreadable."""
    verdicts: dict[int, str] = {}
    for number, verdict in _VERDICT.findall(reply or ""):
        index = int(number) - 1
        if 0 <= index < n_steps and index not in verdicts:
            verdicts[index] = verdict.lower()
    if not verdicts:
        return None
    for index in range(n_steps):
        verdict = verdicts.get(index)
        if verdict in ("incorrect", "neutral"):
            return index
        if verdict is None:
            return None  # a gap before any error: cannot tell whether the missing step was wrong
    return -1


def majority_vote(votes: Sequence[int]) -> int | None:
    """The winning index of readable votes (None when there are none).

    The most frequent index wins. Among tied steps the earliest wins (the first
    error is what is asked for). -1 ("no error") wins only with a strict plurality:
    ``[-1, 3]`` is 3, ``[-1, -1, 2, 2]`` is 2, ``[-1, -1, 2]`` is -1.
    """
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    tied_steps = [index for index, count in counts.items() if count == best and index >= 0]
    return min(tied_steps) if tied_steps else -1


@dataclass
class JudgeVerdict:
    """The vote: the winning index (None if no reply was readable) and the evidence.

    ``replies`` holds every raw reply text, readable or not, so the localized table
    can show why a row was (or was not) localized.
    """

    error_step: int | None
    votes: list[int] = field(default_factory=list)
    unreadable: int = 0
    confidence: float | None = None
    calls: int = 0
    tokens: int = 0
    error: str | None = None
    replies: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One readable line: the votes, the winner and how many replies could not be read."""
        plural = "y" if self.unreadable == 1 else "ies"
        winner = "no readable vote" if self.error_step is None else f"step {self.error_step}"
        text = f"votes {self.votes} -> {winner}; {self.unreadable} unreadable repl{plural}"
        return f"{text}; {self.error}" if self.error else text

    @property
    def evidence(self) -> dict:
        """The summary, votes, unreadable count, error and every raw reply (JSON-able)."""
        return {"summary": self.summary, "votes": self.votes, "unreadable": self.unreadable, "error": self.error,
                "replies": self.replies}

    @property
    def rationale(self) -> str:
        """The evidence for the localized table, as JSON."""
        return json.dumps(self.evidence, ensure_ascii=False)

    def localization(self, finished: bool = True) -> Localization:
        """The vote as a :class:`Localization`: -1 is "no_error" (in a cut solution "unfinished"), no readable vote "unknown"."""
        error_step, status = status_for(self.error_step, finished)
        return Localization(error_step, status, confidence=self.confidence, evidence=self.evidence, method="judge",
                            calls=self.calls, tokens=self.tokens, error=self.error)


def judge_evidence(rationale: str | None) -> dict | None:
    """The judge evidence stored by :attr:`JudgeVerdict.rationale` (None for other rationales)."""
    if not rationale or not rationale.startswith("{"):
        return None
    try:
        data = json.loads(rationale)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "votes" in data and "unreadable" in data else None


@dataclass(frozen=True)
class JudgeItem:
    """What the judge sees about one solution."""

    item_id: str
    question: str
    steps: Sequence[str]
    reference: str | None = None


class JudgeLocalizer:
    """Asks ``generator`` to locate the first error, ``votes`` samples per solution.

    ``temperature`` and ``top_p`` are the judge's sampling settings (k votes need
    some diversity; defaults 0.7 and 0.95). As a
    :class:`~stepdata.localize.base.Localizer` ("judge") it reads the question (and the
    reference solution, for the Step-DPO protocol).
    """

    name = "judge"
    needs = ("question",)

    def __init__(self, generator: Generator, protocol: str = "processbench", votes: int = 5,
                 temperature: float = 0.7, max_tokens: int = 1024, seed: int = 0, top_p: float = 0.95) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown judge protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.generator, self.protocol = generator, protocol
        self.template = load_prompt(f"judge_{protocol}")
        self.sampling = SamplingConfig(n=votes, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                       seed=seed)

    def request(self, item: JudgeItem) -> GenerationRequest:
        if self.protocol == "processbench":
            tagged = "\n\n".join(f"<paragraph_{i}>\n{step.strip()}\n</paragraph_{i}>" for i, step in enumerate(item.steps))
            messages = self.template.render(question=item.question, tagged_steps=tagged)
        else:
            numbered = "\n".join(f"Step {i + 1}: {step_body(step)}" for i, step in enumerate(item.steps))
            messages = self.template.render(question=item.question, numbered_steps=numbered,
                                            reference=item.reference or "(none given)")
        return GenerationRequest.chat(item.item_id, messages)

    def parse(self, reply: str, n_steps: int) -> int | None:
        if self.protocol == "processbench":
            return parse_boxed_index(reply, n_steps)
        return parse_step_verdicts(reply, n_steps)

    def localize(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]:
        """One vote per item; items without steps get a verdict without asking anyone."""
        askable = [item for item in items if item.steps]
        results = {r.request_id: r for r in self.generator.generate([self.request(i) for i in askable], self.sampling)} if askable else {}
        verdicts = []
        for item in items:
            if not item.steps:
                verdicts.append(JudgeVerdict(None, error="no steps to judge"))
                continue
            result = results[item.item_id]
            tokens = result.total_tokens  # prompt + completion, the server's count when it gives one
            if not result.ok:
                verdicts.append(JudgeVerdict(None, calls=1, tokens=tokens, error=f"judge: {result.error}"))
                continue
            replies = [c.text for c in result.completions]
            parsed = [self.parse(text, len(item.steps)) for text in replies]
            readable = [p for p in parsed if p is not None]
            verdict = JudgeVerdict(majority_vote(readable), votes=readable, unreadable=len(parsed) - len(readable),
                                   calls=1, tokens=tokens, replies=replies)
            if verdict.error_step is not None:
                verdict.confidence = readable.count(verdict.error_step) / len(parsed)
            verdicts.append(verdict)
        return verdicts

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        """:meth:`localize` over solutions: one generate call for all of them."""
        items = [JudgeItem(s.solution_id, s.question or "", s.steps, s.reference) for s in solutions]
        return [verdict.localization(s.finished) for s, verdict in zip(solutions, self.localize(items))]


@register_localizer("judge")
def make_judge(generator: Generator, protocol: str = "processbench", votes: int = 5, judge_max_tokens: int = 1024,
               judge_temperature: float = 0.7, judge_top_p: float = 0.95, seed: int = 0) -> JudgeLocalizer:
    """The "judge" localizer, its options named as the CLI's."""
    return JudgeLocalizer(generator, protocol, votes=votes, temperature=judge_temperature, max_tokens=judge_max_tokens,
                          seed=seed, top_p=judge_top_p)


@register_localizer("rules+judge")
def make_rules_then_judge(generator: Generator, rules_tolerance: Tolerance = "written", protocol: str = "processbench",
                          votes: int = 5, judge_max_tokens: int = 1024, judge_temperature: float = 0.7,
                          judge_top_p: float = 0.95, seed: int = 0) -> Fallback:
    """The rules first, the judge wherever they find no false claim (a cut solution included: the judge may
    still find an error in the steps it has)."""
    judge = make_judge(generator, protocol, votes, judge_max_tokens, judge_temperature, judge_top_p, seed)
    return Fallback(RulesLocalizer(rules_tolerance), judge, when=("no_error", "unknown", "unfinished"))
