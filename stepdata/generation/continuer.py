"""Continuing a solution from a prefix with the policy, and labelling where each continuation ends.

Rectification (continue from the last right step), step-controlled negatives
(continue from a cut point, step by step), the Monte-Carlo rollout localizer
(continue from each probed prefix) and inference-time revision all do the same
three things: render the template's partial answer extended by the steps
written so far (exact continuation: the model sees its own earlier text byte for
byte), sample n continuations in one batched call (so prefix caching shares the
prefix), and judge each continuation's answer with the run's answer policy. The
:class:`Continuer` does them once, so those stages cannot drift apart.

The answer is read from the continuation only, never from prefix + continuation:
an answer stated in the prefix is not one the continuation reached.

It lives beside the engines (not in :mod:`stepdata.pipeline`, which re-exports
it) so that the localizers can use it without importing the pipeline package,
whose localize stage imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepdata.answers import AnswerPolicy, Label
from stepdata.generation.base import Generator
from stepdata.generation.types import (
    Completion,
    GenerationRequest,
    SamplingConfig,
    row_error,
)
from stepdata.prompts import PromptTemplate


@dataclass(frozen=True)
class Prefix:
    """A solution to continue: its request key (seeds derive from it), question and text so far."""

    key: str
    question: str
    text: str
    gold: Any = None  # the gold answer the continuations are judged against (None: not judged)


@dataclass
class Continued:
    """The continuations of one prefix, their labels (when judged), their cost, or the error.

    ``tokens`` counts the completion tokens of a successful call (0 when it failed);
    ``total_tokens`` is prompt plus completion as the engine reported them, failed
    calls included (what the call cost).
    """

    key: str
    completions: list[Completion] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None
    total_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def calculator(self) -> tuple[int | None, int | None]:
        """(calculator_calls, calculator_changed) over the continuations; (None, None) without the calculator."""
        from stepdata.generation.calculator_decoding import calculator_counts

        return calculator_counts(self.completions)


class Continuer:
    """Continues prefixes with one generator and template, and labels the ends with one answer policy.

    A failed generation is recorded as ``"<error_kind>: <engine error>"`` (the run summary counts
    errors by that first word), or as the engine's ``prompt_too_long: ...`` for a prompt that does
    not fit the model's context.
    """

    def __init__(self, generator: Generator, template: PromptTemplate, answers: AnswerPolicy, *,
                 error_kind: str = "generation") -> None:
        if not template.continues_assistant:
            raise ValueError(f"template {template.name!r} must end with a partial assistant answer to continue from")
        self.generator, self.template, self.answers = generator, template, answers
        self.error_kind = error_kind

    def request(self, prefix: Prefix) -> GenerationRequest:
        """The chat whose partial answer is extended by the prefix's text."""
        return GenerationRequest.chat(prefix.key, self.template.render_continuing(prefix.text, question=prefix.question))

    def generate(self, prefixes: Sequence[Prefix], sampling: SamplingConfig) -> list[Continued]:
        """n continuations of every prefix in one engine call; no labels."""
        if not prefixes:
            return []
        results = self.generator.generate([self.request(p) for p in prefixes], sampling, progress=False)
        out = []
        for prefix, result in zip(prefixes, results):
            if not result.ok:
                out.append(Continued(prefix.key, error=row_error(result.error, self.error_kind),
                                     total_tokens=result.total_tokens))
            else:
                out.append(Continued(prefix.key, list(result.completions), tokens=result.completion_tokens_total,
                                     total_tokens=result.total_tokens))
        return out

    def continue_and_label(self, prefixes: Sequence[Prefix], sampling: SamplingConfig) -> list[Continued]:
        """:meth:`generate`, then every continuation labelled against its prefix's gold answer (batched)."""
        continued = self.generate(prefixes, sampling)
        items = [(prefix.gold, c.text, c.finish_reason)
                 for prefix, done in zip(prefixes, continued) if done.ok for c in done.completions]
        labels = iter(self.answers.label_many(items))
        for done in continued:
            if done.ok:
                done.labels = [next(labels) for _ in done.completions]
        return continued
