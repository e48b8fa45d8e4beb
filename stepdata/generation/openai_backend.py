"""Any OpenAI-compatible server: OpenAI itself, ``vllm serve``, llama.cpp's server, ...

- Requests run concurrently (``max_concurrency`` at once) on the async client.
- 429, 5xx, time-outs, dropped connections and unreadable responses are retried
  with exponential backoff and jitter, at most ``max_retries`` times, each retry
  logged; any other 4xx fails the request at once (it will never succeed) with the
  server's message. A request that still fails comes back with ``error`` set.
- A server that ignores ``n`` (returns one choice) is detected on the first reply
  and the remaining samples are requested one by one, each with its own seed.
- ``endpoint="chat"`` sends messages (a partial answer is continued with vLLM's
  ``continue_final_message``); ``endpoint="completions"`` renders the chat
  template on the client with ``tokenizer`` (a local path or object), which gives
  exact prefix continuation on any server that serves completions.
- The API key is read from the environment (``api_key_env``), never from
  arguments, and never logged or stored: a server that echoes it in an error
  ("Incorrect API key provided: sk-...") has it scrubbed from the request's
  ``error`` and from every log line (:func:`stepdata.secrets.scrub_secrets`).
- Token counts: ``usage`` is per request, so with n > 1 the per-sample
  ``completion_tokens`` are unknown (None, unless a ``tokenizer`` recounts them)
  while ``GenerationResult.usage_completion_tokens`` holds the server's total,
  added up over the calls made for the request when samples are fanned out.
- ``Completion.stop_reason``: "length" when cut at max_tokens; otherwise vLLM's
  ``stop_reason`` field on the choice (a string: that stop string; an int or null:
  the model ended, "eos"). A server without that field (OpenAI itself, llama.cpp)
  does not say which stop fired: "eos" when no stop strings were requested (the
  model must have ended by itself), None (unknown) when some were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import threading
from typing import Any

from stepdata.generation.base import Generator, client_rendering
from stepdata.generation.progress import GenerationStats, Progress
from stepdata.generation.templates import render_prompt
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
from stepdata.secrets import scrub_secrets

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429}


class PermanentRequestError(RuntimeError):
    """The server refused the request in a way retrying cannot fix (a 4xx other than 408/409/425/429)."""


class MalformedResponse(RuntimeError):
    """The server answered, but not with a usable completion object."""


def _run_coroutine(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion, also from inside a running loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class OpenAIGenerator(Generator):
    """Samples through an OpenAI-compatible HTTP API (see the module doc)."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        endpoint: str = "chat",
        tokenizer: str | Any | None = None,
        max_concurrency: int = 16,
        max_retries: int = 6,
        request_timeout: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model)
        if endpoint not in ("chat", "completions"):
            raise ValueError("endpoint must be 'chat' or 'completions'")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.api_key_env = api_key_env
        if not os.environ.get(api_key_env) and not self.base_url:
            raise ValueError(f"set the API key in the environment variable {api_key_env} (it is never passed as an argument)")
        self.endpoint = endpoint
        self.tokenizer_name = tokenizer if isinstance(tokenizer, str) else None
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        if endpoint == "completions" and tokenizer is None:
            log.info("completions endpoint without a tokenizer: only raw prompts can be sent")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.extra_body = dict(extra_body or {})
        self.server_ignores_n = False

    def describe(self) -> dict[str, Any]:
        """Backend, model and dtype, and (when prompts are rendered here) the endpoint and tokenizer."""
        return super().describe() | client_rendering(self.endpoint, self.tokenizer_name)

    def render(self, request: GenerationRequest) -> str | None:
        if request.prompt is not None:
            return request.prompt
        return render_prompt(self.tokenizer, request) if self.tokenizer is not None else None

    # -- the batch -------------------------------------------------------------------------

    def _generate(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        return _run_coroutine(self._generate_async(requests, sampling, progress, stats))

    async def _generate_async(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, progress: Progress, stats: GenerationStats
    ) -> list[GenerationResult]:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(self.api_key_env) or "EMPTY",
            max_retries=0,
            timeout=self.request_timeout,
        )
        gate = asyncio.Semaphore(self.max_concurrency)
        try:
            return list(await asyncio.gather(*(self._one(client, gate, r, sampling, progress, stats) for r in requests)))
        finally:
            await client.close()

    async def _one(
        self, client: Any, gate: asyncio.Semaphore, request: GenerationRequest, sampling: SamplingConfig,
        progress: Progress, stats: GenerationStats,
    ) -> GenerationResult:
        result = GenerationResult(request.request_id, None, None)
        try:
            result.prompt_text = self.render(request)
            first_n = 1 if self.server_ignores_n else sampling.n
            reply = await self._call(client, gate, request, sampling, first_n,
                                     derive_seed(sampling.seed, request.request_id), stats)
            usage = [self._absorb(result, reply, request, sampling, limit=first_n)]
            missing = sampling.n - len(result.completions)
            if missing > 0:
                if first_n > 1 and not self.server_ignores_n:
                    self.server_ignores_n = True
                    stats.notes.append("server ignores n: samples requested one at a time")
                    log.warning("the server returned %d of %d choices: requesting samples one at a time",
                                len(result.completions), first_n)
                start = len(result.completions)
                replies = await asyncio.gather(*(
                    self._call(client, gate, request, sampling, 1, derive_seed(sampling.seed, request.request_id, i), stats)
                    for i in range(start, sampling.n)
                ))
                for extra in replies:
                    usage.append(self._absorb(result, extra, request, sampling, limit=1, count_prompt=False))
            # one reply without usage leaves the total unknown; the per-sample sum is then the fallback
            known = [u for u in usage if u is not None]
            result.usage_completion_tokens = sum(known) if len(known) == len(usage) else None
        except PermanentRequestError as exc:  # a refusal that names the context is an over-long prompt
            result.error = context_error(str(exc)) or f"{type(exc).__name__}: {exc}"
            result.completions = []
            result.usage_completion_tokens = None
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            result.error = self._scrub(f"{type(exc).__name__}: {exc}")
            result.completions = []
            result.usage_completion_tokens = None
        progress.update(1, result.completion_tokens_total)
        return result

    def _absorb(
        self, result: GenerationResult, reply: Any, request: GenerationRequest, sampling: SamplingConfig, *,
        limit: int, count_prompt: bool = True,
    ) -> int | None:
        """Add the reply's choices to ``result``; returns the reply's ``usage.completion_tokens`` (None if absent)."""
        choices = getattr(reply, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("reply has no choices")
        usage = getattr(reply, "usage", None)
        if count_prompt and usage is not None:
            result.prompt_tokens = getattr(usage, "prompt_tokens", None)
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None) if details is not None else None
            if cached is not None:
                result.cached_prompt_tokens = cached
        for choice in sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)[:limit]:
            text = choice.message.content if self.endpoint_for(request) == "chat" else choice.text
            if text is None:
                raise MalformedResponse("choice has no text")
            tokens = None
            if self.tokenizer is not None:
                tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            elif len(choices) == 1 and usage is not None:
                tokens = getattr(usage, "completion_tokens", None)
            finish_reason = choice.finish_reason or "stop"
            result.completions.append(Completion(text, finish_reason, tokens, self._logprobs(choice),
                                                 stop_reason=_stop_reason(choice, finish_reason, sampling)))
        completion_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        return completion_tokens if isinstance(completion_tokens, int) else None

    def endpoint_for(self, request: GenerationRequest) -> str:
        """Raw prompts always use the completions endpoint; chats use the configured one."""
        return "completions" if self.endpoint == "completions" or request.prompt is not None else "chat"

    @staticmethod
    def _logprobs(choice: Any) -> list[float] | None:
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is None:
            return None
        content = getattr(logprobs, "content", None)
        if content is not None:
            return [item.logprob for item in content]
        values = getattr(logprobs, "token_logprobs", None)
        return list(values) if values is not None else None

    # -- one HTTP call, with retries ---------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` without this backend's key (wherever it is kept) or anything else secret."""
        return scrub_secrets(text, extra=[os.environ.get(self.api_key_env)])

    def _describe(self, exc: Exception) -> str:
        return self._scrub(_describe(exc))

    async def _call(
        self, client: Any, gate: asyncio.Semaphore, request: GenerationRequest, sampling: SamplingConfig,
        n: int, seed: int | None, stats: GenerationStats,
    ) -> Any:
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError,
                     MalformedResponse)
        for attempt in range(self.max_retries + 1):
            try:
                async with gate:
                    reply = await self._send(client, request, sampling, n, seed)
                if not isinstance(getattr(reply, "choices", None), list) or not reply.choices:
                    raise MalformedResponse("reply has no choices")
                return reply
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUS and exc.status_code < 500:
                    raise PermanentRequestError(self._scrub(f"HTTP {exc.status_code}: {_server_message(exc)}")) from None
                failure: Exception = exc
            except retryable as exc:
                failure = exc
            if attempt == self.max_retries:
                raise RuntimeError(f"gave up after {attempt + 1} attempts; last error: {self._describe(failure)}")
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * (0.5 + random.random())
            stats.retries += 1
            log.warning("request %s: %s; retry %d/%d in %.1fs", request.request_id, self._describe(failure),
                        attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, client: Any, request: GenerationRequest, sampling: SamplingConfig, n: int, seed: int | None) -> Any:
        common: dict[str, Any] = dict(
            model=self.model, n=n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=request.budget(sampling), seed=seed,
        )
        if sampling.stop:
            common["stop"] = list(sampling.stop)
        extra = dict(self.extra_body)
        if self.endpoint_for(request) == "completions":
            prompt = self.render(request)
            if prompt is None:
                raise PermanentRequestError("the completions endpoint needs a tokenizer to render chat requests")
            if sampling.logprobs:
                common["logprobs"] = 0
            return await client.completions.create(prompt=prompt, extra_body=extra or None, **common)
        if request.continue_final:
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if sampling.logprobs:
            common["logprobs"] = True
        return await client.chat.completions.create(messages=list(request.messages or ()), extra_body=extra or None, **common)


def _stop_reason(choice: Any, finish_reason: str, sampling: SamplingConfig) -> str | None:
    """Why a choice ended, as ``Completion.stop_reason`` (see the module doc).

    vLLM's server adds ``stop_reason`` to every choice, null included, so a present
    null means end of sequence while an absent field means a server that does not say.
    The openai client keeps such unknown fields in the choice's ``model_extra``.
    """
    if finish_reason == "length":
        return STOP_LENGTH
    if finish_reason != "stop":
        return None  # content_filter, tool_calls, abort, ...: not a stop we can name
    extra = getattr(choice, "model_extra", None) or {}
    if "stop_reason" in extra:
        value = extra["stop_reason"]
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, int):
            return STOP_EOS  # null: the EOS token; an int: a stop token id
    if not sampling.stop:
        return STOP_EOS  # nothing else could have stopped it
    return None


_CONTEXT_REFUSAL = re.compile(r"context length|context window|maximum context|max_model_len", re.IGNORECASE)
_PROMPT_LENGTH = re.compile(r"prompt \(total length (\d+)\)|(\d+) (?:tokens )?in the messages", re.IGNORECASE)
_CONTEXT_LENGTH = re.compile(r"(?:maximum )?context length (?:is |of )?(\d+)", re.IGNORECASE)


def context_error(message: str) -> str | None:
    """A server's refusal of an over-long prompt as ``prompt_too_long: ...`` (None: the refusal is about
    something else). The server knows the context, the client does not: when its message gives the prompt's
    tokens and the context (vLLM's does), the error says them as every backend does, else it keeps the message."""
    if not _CONTEXT_REFUSAL.search(message):
        return None
    tokens, context = _PROMPT_LENGTH.search(message), _CONTEXT_LENGTH.search(message)
    if tokens and context and int(tokens.group(1) or tokens.group(2)) >= int(context.group(1)):
        return prompt_too_long(int(tokens.group(1) or tokens.group(2)), int(context.group(1)))
    return f"prompt_too_long: {message}"


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return json.dumps(body)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + f": {str(exc)[:200]}"
