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

Continuations are requested and labelled by a
:class:`~stepdata.generation.continuer.Continuer` (the one rectify and synthesize
use: exact continuation of the template's partial answer, one batched call per
probe round, request key ``<item_id>@<prefix>``) with the run's
:class:`~stepdata.answers.AnswerPolicy`, reading the continuation alone: an
answer stated in the prefix is not one the continuation reached, and a
continuation cut at ``max_tokens`` never reaches the answer. A rollout whose
answer check failed (a time-out, a worker error, an unreadable gold answer) is
neither right nor wrong: it is left out of the estimate (MC = right / checked)
and counted in the verdict. A probe with no checked rollout at all is unknown,
not MC = 0, and the solution's step is unknown with an ``error`` (retried on
resume). A probe whose generation failed stops that solution's search with the
error ``rollout: <engine error>``; the tokens of a probe are its prompt plus
completion tokens.

A solution cut at ``max_tokens`` (``finished=False``) is not known to fail as a
whole: its full prefix is probed too, and if continuations from it still reach
the answer no step it has is wrong; it is ``unfinished`` (error_step None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepdata.answers import AnswerPolicy
from stepdata.generation import Generator, SamplingConfig
from stepdata.generation.continuer import Continuer, Prefix
from stepdata.localize.base import Localization, Solution, register_localizer
from stepdata.prompts import PromptTemplate, load_prompt
from stepdata.steps import join_steps

SEARCHES = ("linear", "binary")


@dataclass(frozen=True)
class RolloutItem:
    """A wrong solution to localize, with what the policy needs to continue it."""

    item_id: str
    question: str
    answer: str
    steps: Sequence[str]
    finished: bool = True  # False: the solution was cut at max_tokens (see module doc)


@dataclass
class MCVerdict:
    """The located step (None: unknown or unfinished), the MC value of every probed prefix, and the cost.

    ``unchecked`` counts, per probed prefix, the rollouts left out of its estimate
    because their answer check failed.
    """

    error_step: int | None
    mc: dict[int, float] = field(default_factory=dict)
    probes: int = 0
    rollouts: int = 0
    tokens: int = 0
    error: str | None = None
    unchecked: dict[int, int] = field(default_factory=dict)
    unfinished: bool = False  # a cut solution none of whose steps was found wrong
    calculator_calls: int | None = None  # calculator decoding of the rollouts (None: off)
    calculator_changed: int | None = None

    @property
    def status(self) -> str:
        """The localized table's status: error, unfinished or unknown (MC never says "no error")."""
        if self.error_step is not None:
            return "error"
        return "unfinished" if self.unfinished else "unknown"

    @property
    def rationale(self) -> str:
        values = ", ".join(f"prefix {i}: {v:.2f}" for i, v in sorted(self.mc.items()))
        text = f"MC estimates ({values})"
        left_out = {i: n for i, n in sorted(self.unchecked.items()) if n}
        if left_out:
            where = ", ".join(f"prefix {i}: {n}" for i, n in left_out.items())
            text += f"; {sum(left_out.values())} rollouts left out, answer check failed ({where})"
        if self.unfinished:
            text += "; cut at max_tokens, continuations from its last step still reach the answer"
        if self.calculator_calls is not None:
            text += f"; calculator: {self.calculator_calls} results, {self.calculator_changed} changed"
        return text

    def localization(self, method: str) -> Localization:
        """The estimate as a :class:`Localization` (confidence: the MC value at the located step's prefix)."""
        evidence = {"mc": dict(self.mc), "unchecked": dict(self.unchecked), "probes": self.probes,
                    "rollouts": self.rollouts}
        if self.calculator_calls is not None:
            evidence |= {"calculator_calls": self.calculator_calls, "calculator_changed": self.calculator_changed}
        return Localization(self.error_step, self.status,
                            confidence=self.mc.get(self.error_step) if self.error_step is not None else None,
                            evidence=evidence, method=method, calls=self.probes, tokens=self.tokens, error=self.error,
                            note=self.rationale)


@dataclass
class _Search:
    item: RolloutItem
    verdict: MCVerdict
    lo: int = -1  # largest prefix known to succeed (-1: none yet)
    hi: int = 0  # smallest prefix known to fail
    done: bool = False

    def __post_init__(self) -> None:
        # A finished wrong solution fails as a whole (prefix n). A cut one is not known to: its full
        # prefix n can be probed, and n + 1 stands for "fails" past it.
        self.hi = len(self.item.steps) + (0 if self.item.finished else 1)


class RolloutLocalizer:
    """Locates first errors by sampling continuations from prefixes (see module doc).

    ``answer_policy`` labels the continuations (default :class:`AnswerPolicy`: explicit
    answers only, unfinished never right); pass the run's policy so the CLI's answer
    options (``--last-number-fallback``, the check time-out) apply here too. As a
    :class:`~stepdata.localize.base.Localizer` ("rollouts") it reads the question and the
    gold answer and records its method as ``rollouts-<search>``.
    """

    name = "rollouts"
    needs = ("question", "answer")

    def __init__(self, generator: Generator, *, template: str = "step_by_step", rollouts: int = 8,
                 search: str = "binary", temperature: float = 0.8, top_p: float = 0.95, max_tokens: int = 512,
                 seed: int = 0, answer_policy: AnswerPolicy | None = None, calculator: bool = False) -> None:
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; expected one of {SEARCHES}")
        self.search = search
        # the Continuer refuses a template that does not end with a partial assistant answer
        self.continuer = Continuer(generator, load_prompt(template),
                                   answer_policy if answer_policy is not None else AnswerPolicy(), error_kind="rollout")
        self.sampling = SamplingConfig(n=rollouts, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                                       calculator=calculator)

    @property
    def generator(self) -> Generator:
        return self.continuer.generator

    @property
    def template(self) -> PromptTemplate:
        return self.continuer.template

    @property
    def answer_policy(self) -> AnswerPolicy:
        return self.continuer.answers

    def _next_probe(self, state: _Search) -> int | None:
        if state.done:
            return None
        if state.lo < 0:
            return 0  # first: can the policy solve it at all?
        if state.hi - state.lo <= 1:
            return None
        return state.lo + 1 if self.search == "linear" else (state.lo + state.hi) // 2

    @staticmethod
    def _prefix(state: _Search, prefix: int) -> Prefix:
        item = state.item
        return Prefix(key=f"{item.item_id}@{prefix}", question=item.question, text=join_steps(item.steps[:prefix]),
                      gold=item.answer)

    def localize(self, items: Sequence[RolloutItem]) -> list[MCVerdict]:
        states = [_Search(item, MCVerdict(None)) for item in items]
        for state in states:
            if not state.item.steps:
                state.verdict.error, state.done = "no steps to localize", True
        while True:
            round_ = [(s, p) for s in states if (p := self._next_probe(s)) is not None]
            if not round_:
                break
            # one engine call for the round; labels read from each continuation alone
            continued = self.continuer.continue_and_label([self._prefix(s, p) for s, p in round_], self.sampling)
            for (state, prefix), done in zip(round_, continued):
                state.verdict.probes += 1
                state.verdict.tokens += done.total_tokens  # prompt + completion (the server's usage when given)
                if not done.ok:
                    state.verdict.error, state.done = done.error, True  # "rollout: <engine error>"
                    continue
                count = len(done.completions)
                state.verdict.rollouts += count
                calls, changed = done.calculator
                if calls is not None:
                    state.verdict.calculator_calls = (state.verdict.calculator_calls or 0) + calls
                    state.verdict.calculator_changed = (state.verdict.calculator_changed or 0) + (changed or 0)
                checked = [label for label in done.labels if label.correct is not None]
                state.verdict.unchecked[prefix] = count - len(checked)
                if not checked:  # no rollout could be judged: the probe says nothing, it is not MC = 0
                    failed = next((label.error for label in done.labels if label.error), "no rollouts")
                    state.verdict.error = f"answer_check: every rollout from prefix {prefix} failed its check ({failed})"
                    state.done = True
                    continue
                value = sum(bool(label.correct) for label in checked) / len(checked)
                state.verdict.mc[prefix] = value
                if value > 0:
                    state.lo = prefix
                else:
                    state.hi = prefix
                    if prefix == 0:
                        state.done = True  # the policy never solves it: no information
        for state in states:
            if state.verdict.error is None and state.verdict.mc.get(0, 0) > 0:
                if state.hi > len(state.item.steps):  # a cut solution whose every prefix still succeeds
                    state.verdict.unfinished = True
                else:
                    state.verdict.error_step = state.hi - 1
        return [s.verdict for s in states]

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        """:meth:`localize` over solutions: every solution advances together, one generate call a probe round."""
        items = [RolloutItem(s.solution_id, s.question or "", s.answer or "", s.steps, finished=s.finished)
                 for s in solutions]
        return [verdict.localization(f"rollouts-{self.search}") for verdict in self.localize(items)]


@register_localizer("rollouts")
def make_rollouts(generator: Generator, rollouts: int = 8, search: str = "binary",
                  answer_policy: AnswerPolicy | None = None, template: str = "step_by_step", temperature: float = 0.8,
                  top_p: float = 0.95, max_tokens: int = 512, seed: int = 0, calculator: bool = False) -> RolloutLocalizer:
    """The "rollouts" localizer; ``generator`` is the policy, ``rollouts`` the continuations per probed prefix,
    ``calculator`` calculator decoding of the continuations (counted in the evidence)."""
    return RolloutLocalizer(generator, template=template, rollouts=rollouts, search=search, temperature=temperature,
                            top_p=top_p, max_tokens=max_tokens, seed=seed, answer_policy=answer_policy,
                            calculator=calculator)


def max_binary_probes(n_steps: int) -> int:
    """The most probes binary search spends on a solution of ``n_steps`` steps."""
    return 1 + math.ceil(math.log2(n_steps)) if n_steps > 1 else 1
