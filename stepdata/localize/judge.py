"""The judge localizer: an LLM names the first wrong step; k samples, majority vote.

Two protocols, each a template in ``prompts/``:

- ``judge_processbench``: paragraphs tagged with their 0-based index, the answer is
  the index in ``\\boxed{}`` (-1: no error). The last boxed value is read.
- ``judge_stepdpo``: the reference solution is shown and the judge writes one
  verdict per step ("Step k: correct / incorrect / neutral"); the first incorrect
  or neutral step counts, as in Step-DPO's data recipe.

A reply that cannot be read (no box, not an integer, an index out of range, no
verdict lines) is recorded as unreadable and never guessed; the vote is taken over
the readable replies. Ties go to the earliest step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepdata.answers.extract import last_boxed
from stepdata.generation import GenerationRequest, Generator, SamplingConfig
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


@dataclass
class JudgeVerdict:
    """The vote: the winning index (None if no reply was readable) and the evidence."""

    error_step: int | None
    votes: list[int] = field(default_factory=list)
    unreadable: int = 0
    confidence: float | None = None
    calls: int = 0
    tokens: int = 0
    error: str | None = None

    @property
    def rationale(self) -> str:
        return f"votes {self.votes}; {self.unreadable} unreadable repl{'y' if self.unreadable == 1 else 'ies'}"


@dataclass(frozen=True)
class JudgeItem:
    """What the judge sees about one solution."""

    item_id: str
    question: str
    steps: Sequence[str]
    reference: str | None = None


class JudgeLocalizer:
    """Asks ``generator`` to locate the first error, ``votes`` samples per solution."""

    def __init__(self, generator: Generator, protocol: str = "processbench", votes: int = 5,
                 temperature: float = 0.7, max_tokens: int = 1024, seed: int = 0) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown judge protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.generator, self.protocol = generator, protocol
        self.template = load_prompt(f"judge_{protocol}")
        self.sampling = SamplingConfig(n=votes, temperature=temperature, max_tokens=max_tokens, seed=seed)

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
            tokens = (result.prompt_tokens or 0) + sum(c.completion_tokens or 0 for c in result.completions)
            if not result.ok:
                verdicts.append(JudgeVerdict(None, calls=1, tokens=tokens, error=f"judge: {result.error}"))
                continue
            parsed = [self.parse(c.text, len(item.steps)) for c in result.completions]
            readable = [p for p in parsed if p is not None]
            verdict = JudgeVerdict(None, votes=readable, unreadable=len(parsed) - len(readable), calls=1, tokens=tokens)
            if readable:
                counts = Counter(readable)
                best = max(counts.values())
                verdict.error_step = min(i for i, c in counts.items() if c == best)
                verdict.confidence = best / len(parsed)
            verdicts.append(verdict)
        return verdicts

