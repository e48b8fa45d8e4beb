"""Which engine a stage samples from, as settings: built only when a stage first needs it.

A stage holds an :class:`EngineConfig`, not a loaded model, so a finished run is
recognised (and a changed config refused) before seconds to minutes go into
loading weights; :meth:`EngineConfig.describe` says what the engine will be (backend,
model, dtype) without loading it, for the run's config and its table's metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stepdata.generation.base import Generator, describe_engine, make_generator
from stepdata.keyvalues import parse_key_values
from stepdata.settings import setting


@dataclass(frozen=True)
class EngineConfig:
    """One engine: backend, model and the options passed to it."""

    backend: str = setting("auto", "Engine: vllm, openai (an OpenAI-compatible server), hf (transformers), or auto "
                                   "(vLLM when installed, transformers otherwise).",
                           choices=("auto", "vllm", "openai", "hf"))
    model: str | None = setting(None, "Model folder (vllm, hf) or served model name (openai).")
    base_url: str | None = setting(None, "OpenAI-compatible server (openai backend); the key comes from "
                                         "$OPENAI_API_KEY.")
    tokenizer: str | None = setting(None, "Local tokenizer for the openai backend's completions endpoint.")
    engine_options: tuple[str, ...] = setting((), "Passed to the backend, e.g. --engine-option dtype=float32 or "
                                                  "tensor_parallel_size=2 (JSON values). Repeatable.",
                                              cli="--engine-option", multiple=True, metavar="KEY=VALUE")

    def with_model(self, model: str | None) -> EngineConfig:
        """The same engine settings for another model (a recipe's engine section serves every step's model)."""
        return dataclasses.replace(self, model=model)

    def options(self) -> dict[str, Any]:
        """The keyword arguments the backend is built with (``--engine-option`` items read as JSON values)."""
        options = parse_key_values(self.engine_options, option="--engine-option")
        if self.backend == "openai":
            options.update({k: v for k, v in (("base_url", self.base_url), ("tokenizer", self.tokenizer),
                                              ("endpoint", "completions" if self.tokenizer else "chat")) if v})
        return options

    def describe(self) -> dict[str, Any]:
        """Backend, model and dtype the engine will have, worked out without loading it."""
        if self.model is None:
            raise ValueError("no model given (--model)")
        return describe_engine(self.backend, self.model, **self.options())

    def build(self) -> Generator:
        """Load the engine (the slow part: only when a stage has work for it)."""
        if self.model is None:
            raise ValueError("no model given (--model)")
        return make_generator(self.backend, self.model, **self.options())
