"""The judge localizer: an LLM names the first wrong step; one greedy reply or k sampled votes.

Two protocols (:mod:`stepdata.localize.judge_protocols`), each a template in ``prompts/``
(or a file of the user's, ``judge_template``):

- ``processbench``: paragraphs tagged with their 0-based index; the judge reasons and
  ends with the index in ``\\boxed{}`` (-1: no error). The final box is read.
- ``stepdpo``: the reference solution is shown and steps are numbered from 1; the
  judge writes its analysis, then one last line ``Decision: step k`` or ``Decision:
  none``. The last decision line is read.

Decoding follows ProcessBench's reference harness unless told otherwise: one vote is
greedy, several votes sample at temperature 1.0 and top_p 0.9
(:func:`~stepdata.localize.judge_protocols.judge_decoding`).

A reply that cannot be read (no final box or decision line, not an index, an index
out of range) is recorded as unreadable and never guessed; the vote is taken over
the readable replies (:func:`majority_vote`). Ties go to the earliest real step:
"no error" (-1) wins only with a strict plurality, because a split between "fine"
and "step k" is doubt about step k, not agreement that the solution is right.
Every raw reply (the judge's reasoning included) is kept in the verdict's evidence,
so a judge that could not be read (a wrong template, a model that never answers in
the protocol's form) shows up in the data instead of passing for "no error found".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepdata.generation import GenerationRequest, Generator, SamplingConfig
from stepdata.localize.base import (
    Fallback,
    Localization,
    Solution,
    register_localizer,
    status_for,
)
from stepdata.localize.judge_protocols import (
    JUDGE_MAX_TOKENS,
    PROTOCOLS,
    judge_decoding,
    judge_template,
    parse_boxed_index,
    parse_decision_line,
    protocol_named,
)
from stepdata.localize.rules import RulesLocalizer, Tolerance

__all__ = ["PROTOCOLS", "JudgeItem", "JudgeLocalizer", "JudgeVerdict", "judge_evidence", "majority_vote",
           "parse_boxed_index", "parse_decision_line"]


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
    """Asks ``generator`` to locate the first error, ``votes`` replies per solution.

    ``temperature`` and ``top_p`` default by :func:`judge_decoding` (greedy for one
    vote, 1.0 / 0.9 for several); ``template`` is a file replacing the protocol's
    shipped prompt, checked against its variables here. As a
    :class:`~stepdata.localize.base.Localizer` ("judge") it reads the question (and the
    reference solution, for the Step-DPO protocol).
    """

    name = "judge"
    needs = ("question",)

    def __init__(self, generator: Generator, protocol: str = "processbench", votes: int = 5,
                 temperature: float | None = None, max_tokens: int = JUDGE_MAX_TOKENS, seed: int = 0,
                 top_p: float | None = None, template: str | None = None) -> None:
        self.generator, self.protocol = generator, protocol_named(protocol)
        self.template = judge_template(protocol, template)
        temperature, top_p = judge_decoding(votes, temperature, top_p)
        self.sampling = SamplingConfig(n=votes, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                       seed=seed)

    def request(self, item: JudgeItem) -> GenerationRequest:
        """The chat the judge answers about ``item``: the template filled with the protocol's variables."""
        values = self.protocol.values(item.question, item.steps, item.reference)
        return GenerationRequest.chat(item.item_id, self.template.render(**values))

    def parse(self, reply: str, n_steps: int) -> int | None:
        return self.protocol.parse(reply, n_steps)

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
def make_judge(generator: Generator, protocol: str = "processbench", votes: int = 5,
               judge_max_tokens: int = JUDGE_MAX_TOKENS, judge_temperature: float | None = None,
               judge_top_p: float | None = None, seed: int = 0, judge_template: str | None = None) -> JudgeLocalizer:
    """The "judge" localizer, its options named as the CLI's (None: :func:`judge_decoding`'s defaults)."""
    return JudgeLocalizer(generator, protocol, votes=votes, temperature=judge_temperature, max_tokens=judge_max_tokens,
                          seed=seed, top_p=judge_top_p, template=judge_template)


@register_localizer("rules+judge")
def make_rules_then_judge(generator: Generator, rules_tolerance: Tolerance = "written", protocol: str = "processbench",
                          votes: int = 5, judge_max_tokens: int = JUDGE_MAX_TOKENS,
                          judge_temperature: float | None = None, judge_top_p: float | None = None, seed: int = 0,
                          judge_template: str | None = None) -> Fallback:
    """The rules first, the judge wherever they find no false claim (a cut solution included: the judge may
    still find an error in the steps it has)."""
    judge = make_judge(generator, protocol, votes, judge_max_tokens, judge_temperature, judge_top_p, seed,
                       judge_template)
    return Fallback(RulesLocalizer(rules_tolerance), judge, when=("no_error", "unknown", "unfinished"))
