"""What every generation backend takes and returns.

A request is one of three things:

- a chat (``messages``), answered after the template's generation prompt;
- a chat whose last message is a partial assistant answer (``continue_final=True``),
  continued exactly where it stops: the template is applied once and nothing
  (no end-of-turn, no new generation prompt) comes between the partial answer
  and the model's next token. Rectification and rollouts depend on this;
- a raw ``prompt`` string, sent as is.

Sampling settings apply to a whole batch. Seeds are derived per request (and per
sample where a backend samples one at a time) from ``seed`` and the request id,
so a request gets the same samples whatever batch, shard or resumed run it is in.

Each completion says why it ended (``Completion.stop_reason``): the stop string
that fired, :data:`STOP_EOS` or :data:`STOP_LENGTH`. A result carries the
request's completion-token total as the engine or server counted it
(``GenerationResult.usage_completion_tokens``): over HTTP usage is reported per
request, not per sample, so per-sample counts can be unknown while the total is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, str]

STOP_EOS = "eos"
"""``Completion.stop_reason`` when the model ended by itself: an EOS or end-of-turn token, or a stop token id."""
STOP_LENGTH = "length"
"""``Completion.stop_reason`` when the sample was cut at ``max_tokens``."""

PROMPT_TOO_LONG = "prompt_too_long"
"""The kind of a request's error when its prompt does not fit the model's context (see :func:`prompt_too_long`)."""


def prompt_too_long(tokens: int, context: int) -> str:
    """The error of a request whose prompt leaves no room to generate: ``prompt_too_long: N tokens > context M``.

    Every backend that knows its model's context (vLLM's ``max_model_len``, a transformers
    config's ``max_position_embeddings``) refuses such a prompt with this error instead of
    truncating it or failing the batch; a server that refuses one gets its message in this
    kind. A stage records it as the row's error under its own kind.
    """
    if tokens > context:
        return f"{PROMPT_TOO_LONG}: {tokens} tokens > context {context}"
    return f"{PROMPT_TOO_LONG}: {tokens} tokens = context {context} (no room to generate)"


def row_error(error: str, kind: str = "generation") -> str:
    """A failed request's error as a table row records it: ``"KIND: error"``, except an error that names its own
    kind (``prompt_too_long: ...``), so a run summary counts over-long prompts apart from failed requests."""
    return error if error.startswith(f"{PROMPT_TOO_LONG}:") else f"{kind}: {error}"


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; defaults follow Step-DPO's data recipe (T=0.8, top_p=0.95)."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    logprobs: bool = False
    # calculator decoding: every arithmetic result written exactly (stepdata.generation.calculator_decoding)
    calculator: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1 (it is always set: an unbounded sample never ends)")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.greedy and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) with n > 1 gives n identical samples; use n=1")
        if self.calculator and self.logprobs:
            raise ValueError("logprobs with the calculator are refused: a text the calculator wrote into is not "
                             "one sampling's tokens")
        if self.calculator and any("=" in s for s in self.stop):
            raise ValueError("with the calculator, a stop string may not contain '=' (the calculator stops at an "
                             "expression's '=' itself, and a stop across that point would never be seen)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_record(self) -> dict[str, Any]:
        """The settings as stored in a rollouts table's ``sampling`` column."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample from (see the module doc for the three kinds)."""

    request_id: str
    messages: tuple[Message, ...] | None = None
    continue_final: bool = False
    prompt: str | None = None
    max_tokens: int | None = None  # a budget of this request's own (a calculator continuation's), else the batch's

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"request {self.request_id!r}: max_tokens must be at least 1")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.request_id!r}: give either messages or prompt, not both or neither")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
            if not self.messages:
                raise ValueError(f"request {self.request_id!r}: messages is empty")
            if self.continue_final and self.messages[-1].get("role") != "assistant":
                raise ValueError(f"request {self.request_id!r}: continue_final needs a last message from the assistant")
        elif self.continue_final:
            raise ValueError(f"request {self.request_id!r}: continue_final applies to chat messages only")

    @classmethod
    def chat(cls, request_id: str, messages: Sequence[Message]) -> GenerationRequest:
        """A chat whose last message is from the assistant is continued; otherwise it is answered."""
        messages = tuple(messages)
        return cls(request_id, messages=messages, continue_final=bool(messages) and messages[-1].get("role") == "assistant")

    @classmethod
    def raw(cls, request_id: str, prompt: str) -> GenerationRequest:
        return cls(request_id, prompt=prompt)

    def budget(self, sampling: SamplingConfig) -> int:
        """The most tokens to generate for this request: its own ``max_tokens`` when set, else the batch's."""
        return self.max_tokens if self.max_tokens is not None else sampling.max_tokens


@dataclass
class Completion:
    """One sample: its text (stop string excluded), why it ended, and its length in tokens.

    ``finish_reason`` is the coarse engine value (stop | length | error); ``stop_reason``
    says which stop ended it, because a sample cut by a step delimiter is a finished step
    while one that reached end-of-turn is a finished answer: the stop string exactly as
    given in ``SamplingConfig.stop``, :data:`STOP_EOS` when the model ended by itself, or
    :data:`STOP_LENGTH` when cut at ``max_tokens``. None only where the backend cannot
    know (an OpenAI-compatible server that does not report it while stop strings were
    requested). A stop string spelled "eos" or "length" reads the same as those
    constants; ``finish_reason`` tells them apart.
    """

    text: str
    finish_reason: str  # stop | length | error
    completion_tokens: int | None  # None where only the request's total is known (see GenerationResult)
    token_logprobs: list[float] | None = None
    token_ids: list[int] | None = None  # when the backend sees them (not over HTTP)
    stop_reason: str | None = None
    # calculator decoding only (None without it): results the calculator gave, and how many of them differed
    # from what the model wrote (see stepdata.generation.calculator_decoding)
    calculator_calls: int | None = None
    calculator_changed: int | None = None


@dataclass
class GenerationResult:
    """All samples of one request, or the error that kept it from finishing."""

    request_id: str
    prompt_text: str | None  # exactly what the model saw (template applied), when known
    prompt_tokens: int | None
    completions: list[Completion] = field(default_factory=list)
    cached_prompt_tokens: int | None = None
    error: str | None = None
    # The request's completion tokens as the engine or server counted them (summed over the
    # calls a backend made for it); set even where per-sample counts are unknown.
    usage_completion_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def completion_tokens_total(self) -> int:
        """All completion tokens of the request: the usage total when known, else the per-sample sum.

        Use this rather than summing ``completion_tokens``: over HTTP with n > 1 the
        per-sample counts are None (usage is per request) and the sum would be 0.
        """
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return sum(c.completion_tokens or 0 for c in self.completions)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (an unknown prompt count counts as 0)."""
        return (self.prompt_tokens or 0) + self.completion_tokens_total


def derive_seed(base: int | None, *parts: object) -> int | None:
    """A stable 31-bit seed from ``base`` and the parts (request id, sample index)."""
    if base is None:
        return None
    digest = hashlib.sha256(":".join(str(p) for p in (base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
