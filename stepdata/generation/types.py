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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, str]


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
        object.__setattr__(self, "stop", tuple(self.stop))

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

    def __post_init__(self) -> None:
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


@dataclass
class Completion:
    """One sample: its text (stop string excluded), why it ended, and its length in tokens."""

    text: str
    finish_reason: str  # stop | length | error
    completion_tokens: int | None
    token_logprobs: list[float] | None = None
    token_ids: list[int] | None = None  # when the backend sees them (not over HTTP)


@dataclass
class GenerationResult:
    """All samples of one request, or the error that kept it from finishing."""

    request_id: str
    prompt_text: str | None  # exactly what the model saw (template applied), when known
    prompt_tokens: int | None
    completions: list[Completion] = field(default_factory=list)
    cached_prompt_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def derive_seed(base: int | None, *parts: object) -> int | None:
    """A stable 31-bit seed from ``base`` and the parts (request id, sample index)."""
    if base is None:
        return None
    digest = hashlib.sha256(":".join(str(p) for p in (base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
