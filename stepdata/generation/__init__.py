"""Sampling from a model: one interface, three engines (vLLM, OpenAI-compatible HTTP, transformers).

Engines are imported only when one is built, so ``import stepdata.generation``
needs none of torch, transformers, vLLM.
"""

from stepdata.generation.base import BACKENDS, Generator, make_generator, vllm_available
from stepdata.generation.progress import GenerationStats
from stepdata.generation.types import (
    STOP_EOS,
    STOP_LENGTH,
    Completion,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
    derive_seed,
)

__all__ = [
    "BACKENDS",
    "STOP_EOS",
    "STOP_LENGTH",
    "Completion",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStats",
    "Generator",
    "SamplingConfig",
    "derive_seed",
    "make_generator",
    "vllm_available",
]
