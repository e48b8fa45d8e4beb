"""The rollout localizer: Monte-Carlo estimates from prefixes with the same policy.

For a wrong solution with steps s_0..s_{n-1}, prefix i is s_0..s_{i-1} (prefix 0
is the question alone). ``k`` continuations are sampled from each probed prefix
with the policy that wrote the solution; the soft estimate MC(i) is the share that
reach the gold answer, the hard estimate is MC(i) > 0 (both as in Math-Shepherd).
The first wrong step is the last step before the first prefix from which no
continuation reaches the answer: error_step = i - 1 for the smallest i with MC(i) = 0.

- ``search="linear"`` probes prefixes 0, 1, 2, ... and stops at the first MC = 0;
- ``search="binary"`` (as in OmegaPRM) probes prefix 0, then bisects between the
  last prefix known to succeed and the first known to fail (the full wrong solution
  fails by definition): 1 + ceil(log2(n)) probes at most.

If the policy cannot solve the problem from the question alone (MC(0) = 0) the
step is unknown (null): the estimate says nothing about where the error is. Every
probed prefix's MC value is kept in the verdict. All solutions advance together,
one probe round per ``generate`` call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepdata.answers import (
    DEFAULT_CONFIG,
    AnswerCheckConfig,
    check_answers,
    extract_answer,
)
from stepdata.generation import GenerationRequest, Generator, SamplingConfig
from stepdata.prompts import load_prompt
from stepdata.steps import join_steps

SEARCHES = ("linear", "binary")


@dataclass(frozen=True)
class RolloutItem:
    """A wrong solution to localize, with what the policy needs to continue it."""

    item_id: str
    question: str
    answer: str
    steps: Sequence[str]


@dataclass
class MCVerdict:
    """The located step (None: unknown), the MC value of every probed prefix, and the cost."""

    error_step: int | None
    mc: dict[int, float] = field(default_factory=dict)
    probes: int = 0
    rollouts: int = 0
    tokens: int = 0
    error: str | None = None

    @property
    def rationale(self) -> str:
        values = ", ".join(f"prefix {i}: {v:.2f}" for i, v in sorted(self.mc.items()))
        return f"MC estimates ({values})"


@dataclass
class _Search:
    item: RolloutItem
    verdict: MCVerdict
    lo: int = -1  # largest prefix known to succeed (-1: none yet)
    hi: int = 0  # smallest prefix known to fail
    done: bool = False

    def __post_init__(self) -> None:
        self.hi = len(self.item.steps)


class RolloutLocalizer:
    """Locates first errors by sampling continuations from prefixes (see module doc)."""

    def __init__(self, generator: Generator, *, template: str = "step_by_step", rollouts: int = 8,
                 search: str = "binary", temperature: float = 0.8, top_p: float = 0.95, max_tokens: int = 512,
                 seed: int = 0, check: AnswerCheckConfig = DEFAULT_CONFIG) -> None:
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; expected one of {SEARCHES}")
        self.generator, self.search = generator, search
        self.template = load_prompt(template)
        if not self.template.continues_assistant:
            raise ValueError(f"template {template!r} must end with a partial assistant answer to continue from")
        self.sampling = SamplingConfig(n=rollouts, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        self.check = check

    def _next_probe(self, state: _Search) -> int | None:
        if state.done:
            return None
        if state.lo < 0:
            return 0  # first: can the policy solve it at all?
        if state.hi - state.lo <= 1:
            return None
        return state.lo + 1 if self.search == "linear" else (state.lo + state.hi) // 2

    def _request(self, state: _Search, prefix: int) -> GenerationRequest:
        messages = self.template.render_continuing(join_steps(state.item.steps[:prefix]), question=state.item.question)
        return GenerationRequest.chat(f"{state.item.item_id}@{prefix}", messages)

    def localize(self, items: Sequence[RolloutItem]) -> list[MCVerdict]:
        states = [_Search(item, MCVerdict(None)) for item in items]
        for state in states:
            if not state.item.steps:
                state.verdict.error, state.done = "no steps to localize", True
        while True:
            round_ = [(s, p) for s in states if (p := self._next_probe(s)) is not None]
            if not round_:
                break
            results = self.generator.generate([self._request(s, p) for s, p in round_], self.sampling, progress=False)
            pairs, owners = [], []
            for (state, prefix), result in zip(round_, results):
                state.verdict.probes += 1
                state.verdict.tokens += (result.prompt_tokens or 0) + sum(c.completion_tokens or 0 for c in result.completions)
                if not result.ok:
                    state.verdict.error, state.done = f"rollout: {result.error}", True
                    continue
                state.verdict.rollouts += len(result.completions)
                head = join_steps(state.item.steps[:prefix])
                for completion in result.completions:
                    pairs.append((state.item.answer, extract_answer(head + completion.text)))
                owners.append((state, prefix, len(result.completions)))
            verdicts = iter(check_answers(pairs, self.check))
            for state, prefix, count in owners:
                value = sum(next(verdicts).match for _ in range(count)) / count
                state.verdict.mc[prefix] = value
                if value > 0:
                    state.lo = prefix
                else:
                    state.hi = prefix
                    if prefix == 0:
                        state.done = True  # the policy never solves it: no information
        for state in states:
            if state.verdict.error is None and state.verdict.mc.get(0, 0) > 0:
                state.verdict.error_step = state.hi - 1
        return [s.verdict for s in states]


def max_binary_probes(n_steps: int) -> int:
    """The most probes binary search spends on a solution of ``n_steps`` steps."""
    return 1 + math.ceil(math.log2(n_steps)) if n_steps > 1 else 1
