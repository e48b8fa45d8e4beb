"""The generator interface shared by the vLLM, OpenAI-compatible and transformers backends.

Stages only ever call :meth:`Generator.generate` with a list of requests and one
:class:`SamplingConfig`, and get one :class:`GenerationResult` per request in the
same order. A request that fails (retries exhausted, a server that refuses it)
comes back with ``error`` set; it is never dropped and never raises out of the
batch, so a stage can record it and retry it on resume.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from stepdata.generation.progress import GenerationStats, Progress
from stepdata.generation.types import (
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
)
from stepdata.secrets import scrub_secrets

log = logging.getLogger(__name__)


class Generator(ABC):
    """Samples completions from one model. Use as a context manager to release it."""

    backend: str = "base"
    dtype: str | None = None  # what the model computes in; None where a server decides it

    def __init__(self, model: str) -> None:
        self.model = model
        self.last_stats: GenerationStats | None = None

    def describe(self) -> dict[str, Any]:
        """Backend, model and dtype: what a stage records so its table says which engine made it."""
        return {"backend": self.backend, "model": str(self.model), "dtype": self.dtype}

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[GenerationResult]:
        """Sample ``sampling.n`` completions for every request; results in request order."""
        requests = list(requests)
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids must be unique within a generate call")
        stats = GenerationStats(backend=self.backend, requests=len(requests))
        reporter = Progress(f"generate[{self.backend}]", len(requests), enabled=progress)
        start = time.monotonic()
        if not requests:
            results: list[GenerationResult] = []
        elif sampling.calculator:
            from stepdata.generation.calculator_decoding import generate_with_calculator

            results = generate_with_calculator(self, requests, sampling, reporter, stats)
        else:
            results = self._generate(requests, sampling, reporter, stats)
        stats.seconds = time.monotonic() - start
        if [r.request_id for r in results] != ids:
            raise RuntimeError(f"{self.backend} backend returned results out of order or incomplete")
        for result in results:
            if result.error:  # a server may echo the key it was sent ("Incorrect API key provided: sk-...")
                result.error = scrub_secrets(result.error)
            stats.failed_requests += not result.ok
            stats.samples += len(result.completions)
            stats.prompt_tokens += result.prompt_tokens or 0
            stats.completion_tokens += result.completion_tokens_total  # usage totals: per-sample counts may be None
            if result.cached_prompt_tokens is not None:
                stats.cached_prompt_tokens = (stats.cached_prompt_tokens or 0) + result.cached_prompt_tokens
        self.last_stats = stats
        if progress:
            print(stats.summary(), file=sys.stderr, flush=True)
        if stats.failed_requests:
            log.warning("%d of %d requests failed; see their results' error", stats.failed_requests, stats.requests)
        return results

    @abstractmethod
    def _generate(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        """Backend-specific sampling; must return one result per request, in order."""

    def render(self, request: GenerationRequest) -> str | None:
        """The exact prompt text this backend sends for ``request`` (None if only the server knows)."""
        return None

    def close(self) -> None:
        """Release the model or connections (idempotent)."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS = ("vllm", "openai", "hf")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``vllm`` when it is installed, else ``hf``; ``transformers`` -> ``hf``."""
    if backend == "auto":
        return "vllm" if vllm_available() else "hf"
    return "hf" if backend == "transformers" else backend


def describe_engine(backend: str, model: str, **options: Any) -> dict[str, Any]:
    """What :meth:`Generator.describe` will say, worked out without loading anything.

    A stage puts this into its run config (and so into its table's metadata and the
    config a resumed run is checked against) before it builds the engine, so the
    check of a finished run needs no engine. It is a function of the command's
    options, the model's config and the device only, so a resumed run computes the
    same description. A server's dtype is its own business: None.
    """
    from stepdata.generation.dtypes import choose_hf_dtype, choose_vllm_dtype

    backend = resolve_backend(backend)
    dtype: str | None = None
    if backend == "vllm":
        dtype, _ = choose_vllm_dtype(model, options.get("dtype", "auto"))
    elif backend == "hf":
        from stepdata.generation.hf_backend import pick_device

        dtype = choose_hf_dtype(pick_device(options.get("device", "auto")), options.get("dtype"))
    elif backend != "openai":
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS + ('auto',)}")
    return {"backend": backend, "model": str(model), "dtype": dtype} | (
        client_rendering(options.get("endpoint", "chat"), options.get("tokenizer")) if backend == "openai" else {})


def client_rendering(endpoint: str, tokenizer: Any) -> dict[str, Any]:
    """How an OpenAI-compatible backend sends chats, when not as chats: the completions endpoint and the
    local tokenizer (named by its path) that renders the prompts, which change what the server continues."""
    described: dict[str, Any] = {}
    if endpoint != "chat":
        described["endpoint"] = endpoint
    if isinstance(tokenizer, str):
        described["tokenizer"] = tokenizer
    return described


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    """Build a backend by name: ``vllm``, ``openai``, ``hf`` (transformers) or ``auto``.

    ``auto`` picks vLLM when it is installed and transformers otherwise.
    """
    backend = resolve_backend(backend)
    if backend == "vllm":
        from stepdata.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator(model, **options)
    if backend == "openai":
        from stepdata.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator(model, **options)
    if backend == "hf":
        from stepdata.generation.hf_backend import TransformersGenerator

        return TransformersGenerator(model, **options)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS + ('auto',)}")
