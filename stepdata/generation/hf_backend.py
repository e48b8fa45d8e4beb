"""transformers backend: batched sampling for small models and machines without vLLM.

The sampling loop is ours rather than ``model.generate`` so that every sample
draws from its own seeded ``torch.Generator``: sample i of a request is the same
whatever else is in the batch, which makes resumed and sharded runs reproducible.
Batches are left-padded, sorted by length, and decode with the KV cache.

With ``seed=None`` each generate call draws a fresh random base seed and derives the
per-sample seeds from it as usual: the n samples of a request are independent (a
single shared seed would make them identical), but not reproducible across runs.
The loop also knows why each sample ended, reported as ``Completion.stop_reason``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from stepdata.generation.base import Generator
from stepdata.generation.dtypes import choose_hf_dtype, cuda_available
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
    prompt_too_long,
)

log = logging.getLogger(__name__)


@dataclass
class _Sequence:
    request_index: int
    sample_index: int
    prompt_ids: list[int]
    seed: int
    max_tokens: int  # the request's budget (GenerationRequest.budget)


def _first_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Where the text is cut and the stop string that ended it, or None when none occurs.

    One token can complete several stop strings at once. The one that completes
    earliest in the text ended the sample (as if the text came a character at a time;
    ties go to the first in ``stops``), the same rule vLLM applies, so both backends
    report the same stop; the text is cut where that stop string begins.
    """
    best: tuple[int, str] | None = None
    for stop in stops:
        start = text.find(stop)
        if start >= 0 and (best is None or start + len(stop) < best[0] + len(best[1])):
            best = (start, stop)
    return best


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(config: Any) -> int | None:
    """The longest sequence (prompt + completion) a transformers model config says the model takes, or None."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)  # a multimodal model's language part
    return context_length(text_config) if text_config is not None and text_config is not config else None


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    return "cuda" if cuda_available() else "cpu"


class TransformersGenerator(Generator):
    """Samples with a transformers causal LM, ``batch_size`` sequences at a time.

    The dtype is :func:`~stepdata.generation.dtypes.choose_hf_dtype`'s (float32 on CPU,
    bfloat16 on a GPU that has it) unless ``dtype=`` says otherwise; ``self.dtype``
    is what the loaded model's parameters are in (a model object passed in keeps its own).

    The context (``self.max_model_len``) is the model config's ``max_position_embeddings``
    (or its like), or ``max_model_len=`` as vLLM takes it: a prompt that leaves no room in
    it is the request's error (``prompt_too_long: N tokens > context M``), never run past
    the positions the model was trained on, and a sample stops (cut, as at ``max_tokens``)
    where prompt and completion fill it.
    """

    backend = "hf"

    def __init__(
        self,
        model: str | Any,
        *,
        tokenizer: Any | None = None,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 16,
        max_model_len: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        torch_dtype = getattr(torch, choose_hf_dtype(self.device, dtype))
        if isinstance(model, str):
            name = model
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= with a model object")
            name = getattr(model.config, "_name_or_path", type(model).__name__)
            self.tokenizer, self.lm = tokenizer, model
        super().__init__(name)
        self.lm.to(self.device).eval()
        self.dtype = str(next(self.lm.parameters()).dtype).removeprefix("torch.")
        log.info("hf: %s in %s on %s", name, self.dtype, self.device)
        self.batch_size = batch_size
        self.max_model_len = max_model_len or context_length(self.lm.config)
        eos = self.lm.generation_config.eos_token_id if self.lm.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids or {0})

    def render(self, request: GenerationRequest) -> str:
        return render_prompt(self.tokenizer, request)

    def _generate(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        sequences: list[_Sequence] = []
        # seed=None: one fresh base per call, so samples differ from each other and from other runs
        # (derive_seed(None, ...) is None, and one fixed fallback seed would make all n samples equal).
        base_seed = sampling.seed if sampling.seed is not None else secrets.randbits(31)
        for index, request in enumerate(requests):
            try:
                text = self.render(request)
                ids = encode_prompt(self.tokenizer, request, text)
            except Exception as exc:  # noqa: BLE001 - a bad request is a per-row error
                results.append(GenerationResult(request.request_id, None, None, error=f"{type(exc).__name__}: {exc}"))
                continue
            if self.max_model_len is not None and len(ids) >= self.max_model_len:
                results.append(GenerationResult(request.request_id, text, len(ids),
                                                error=prompt_too_long(len(ids), self.max_model_len)))
                continue
            results.append(GenerationResult(request.request_id, text, len(ids), completions=[None] * sampling.n))  # type: ignore[list-item]
            for sample in range(sampling.n):
                seed = derive_seed(base_seed, request.request_id, sample)
                assert seed is not None
                sequences.append(_Sequence(index, sample, ids, seed, request.budget(sampling)))
        remaining = {i: sampling.n for i, r in enumerate(results) if r.ok}
        sequences.sort(key=lambda s: len(s.prompt_ids))
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            try:
                completions = self._sample_batch(batch, sampling)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail these requests, keep the rest
                log.warning("a batch of %d sequences failed: %s", len(batch), exc)
                for seq in batch:
                    results[seq.request_index].error = f"{type(exc).__name__}: {exc}"
                completions = [None] * len(batch)
            for seq, completion in zip(batch, completions):
                results[seq.request_index].completions[seq.sample_index] = completion  # type: ignore[call-overload]
                remaining[seq.request_index] -= 1
                done = results[seq.request_index]
                if remaining[seq.request_index] == 0 and done.ok:
                    done.usage_completion_tokens = sum(c.completion_tokens or 0 for c in done.completions)
                    progress.update(1, done.usage_completion_tokens)
        for result in results:
            if not result.ok:
                result.completions = []  # a request with a failed sample is retried whole, never half-kept
                result.usage_completion_tokens = None
                progress.update(1)
        return results

    def _sample_batch(self, batch: list[_Sequence], sampling: SamplingConfig) -> list[Completion]:
        import torch

        device = self.device
        width = max(len(s.prompt_ids) for s in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            input_ids[row, width - len(seq.prompt_ids) :] = torch.tensor(seq.prompt_ids)
            attention[row, width - len(seq.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator(device=device).manual_seed(seq.seed) for seq in batch]
        generated: list[list[int]] = [[] for _ in batch]
        logprobs: list[list[float]] = [[] for _ in batch]
        finish: list[str | None] = [None] * len(batch)
        reasons: list[str | None] = [None] * len(batch)
        texts: list[str | None] = [None] * len(batch)
        past = None
        step_ids, step_positions = input_ids, positions
        # each sample stops at max_tokens or where it fills the model's context, whichever comes first
        limits = [seq.max_tokens if self.max_model_len is None else
                  min(seq.max_tokens, self.max_model_len - len(seq.prompt_ids)) for seq in batch]
        with torch.inference_mode():
            for _ in range(max(limits)):
                out = self.lm(input_ids=step_ids, attention_mask=attention, position_ids=step_positions,
                              past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                chosen = self._choose(logits, sampling, generators)
                raw_logprobs = torch.log_softmax(logits, dim=-1) if sampling.logprobs else None
                for row in range(len(batch)):
                    if finish[row] is not None:
                        chosen[row] = self.pad_id
                        continue
                    token = int(chosen[row])
                    generated[row].append(token)
                    if raw_logprobs is not None:
                        logprobs[row].append(float(raw_logprobs[row, token]))
                    if token in self.eos_ids:
                        finish[row], reasons[row] = "stop", STOP_EOS
                    elif sampling.stop:
                        text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                        hit = _first_stop(text, sampling.stop)
                        if hit is not None:
                            cut, reasons[row] = hit
                            finish[row], texts[row] = "stop", text[:cut]
                    if finish[row] is None and len(generated[row]) >= limits[row]:
                        finish[row], reasons[row] = "length", STOP_LENGTH
                if all(f is not None for f in finish):
                    break
                step_ids = chosen.view(-1, 1).to(device)
                attention = torch.cat([attention, torch.ones((len(batch), 1), dtype=attention.dtype, device=device)], 1)
                step_positions = step_positions[:, -1:] + 1
        completions = []
        for row in range(len(batch)):
            text = texts[row]
            if text is None:
                text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            completions.append(Completion(text, finish[row] or "length", len(generated[row]),
                                          logprobs[row] if sampling.logprobs else None, generated[row],
                                          stop_reason=reasons[row] or STOP_LENGTH))
        return completions

    @staticmethod
    def _choose(logits: Any, sampling: SamplingConfig, generators: list[Any]) -> Any:
        import torch

        if sampling.greedy:
            return logits.argmax(dim=-1).cpu()
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p  # keeps at least the top token
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
        return torch.stack([torch.multinomial(probs[row], 1, generator=gen)[0] for row, gen in enumerate(generators)]).cpu()

    def close(self) -> None:
        self.lm = None  # type: ignore[assignment]
