"""One place that builds a pairs-table row, so every stage fills it the same way.

Stages 3 and 4 and the DPO baseline all produce (prefix, chosen, rejected) with
different meanings of "chosen"; :func:`make_pair` derives the rest (id, full
texts, whether each side ends the solution) so that the trainers' end-of-sequence
policy and the audit view never have to guess.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from stepdata.schema import CHOSEN_SOURCES, PAIR_KINDS
from stepdata.steps import join_steps


def prompt_messages_of(messages: Sequence[dict[str, str]]) -> str:
    """The ``prompt_messages`` JSON text for a rendered template chat."""
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


def partial_answer(prompt_messages: str | None) -> str:
    """The assistant's partial answer that the prefix steps continue ("" when the chat ends with the user
    or there is no chat; a null may arrive as NaN from pandas)."""
    if not isinstance(prompt_messages, str) or not prompt_messages:
        return ""
    messages = json.loads(prompt_messages)
    return messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else ""


def make_pair(
    *,
    problem_id: str,
    question: str,
    answer: str | None,
    prompt_messages: str | None,
    prefix_steps: Sequence[str],
    chosen: str,
    rejected: str,
    chosen_rest: str = "",
    rejected_rest: str = "",
    kind: str,
    error_step: int | None,
    source: str | None = None,
    chosen_verified: bool | None = None,
    chosen_source: str | None = None,
    model: str | None = None,
    sampling: dict[str, Any] | None = None,
    localizer: str | None = None,
    chosen_finished: bool = True,
    rejected_finished: bool = True,
) -> dict[str, Any]:
    """A pairs-table row; its ``pair_id`` is a hash of all that makes it this pair, so equal ids are equal pairs.

    ``chosen_rest``/``rejected_rest`` are what follows chosen/rejected in their
    complete solutions (for Step-DPO, the steps after step k); empty means the side
    ends the solution, so a trainer appends end-of-sequence to it and to nothing else.
    A side whose solution was cut at ``max_tokens`` (``*_finished=False``) never ends
    its solution, even with nothing after it: EOS there would teach stopping mid-way.
    ``chosen_source`` says who wrote chosen (:data:`~stepdata.schema.CHOSEN_SOURCES`: the policy, a
    person, a reference solution; None when not recorded); it is not part of the pair's identity.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; expected one of {PAIR_KINDS}")
    if chosen_source is not None and chosen_source not in CHOSEN_SOURCES:
        raise ValueError(f"unknown chosen_source {chosen_source!r}; expected one of {CHOSEN_SOURCES}")
    head = partial_answer(prompt_messages) + join_steps(prefix_steps)
    row = {
        "pair_id": None,
        "problem_id": problem_id,
        "source": source,
        "question": question,
        "answer": answer,
        "prompt_messages": prompt_messages,
        "prefix_steps": list(prefix_steps),
        "chosen": chosen,
        "rejected": rejected,
        "chosen_full": head + chosen + chosen_rest,
        "rejected_full": head + rejected + rejected_rest,
        "chosen_ends_solution": not chosen_rest and chosen_finished,
        "rejected_ends_solution": not rejected_rest and rejected_finished,
        "error_step": error_step,
        "chosen_verified": chosen_verified,
        "chosen_source": chosen_source,
        "kind": kind,
        "provenance": {
            "model": model,
            "sampling": json.dumps(sampling or {}, sort_keys=True),
            "localizer": localizer,
        },
    }
    row["pair_id"] = pair_id(row)
    return row


# What makes a pair this pair: the step-level sides and the full solutions they sit in (two rollouts that
# share a wrong step but go on differently give two pairs), the prompt and prefix, and where EOS goes.
PAIR_IDENTITY = ("problem_id", "kind", "prompt_messages", "prefix_steps", "chosen", "rejected", "chosen_full",
                 "rejected_full", "chosen_ends_solution", "rejected_ends_solution")


def _plain(value: Any) -> Any:
    """A numpy scalar (a flag read back from a table) as the Python value JSON writes."""
    return value.item() if hasattr(value, "item") else str(value)


def pair_id(pair: Mapping[str, Any]) -> str:
    """``PROBLEM:KIND:HASH``, the hash over :data:`PAIR_IDENTITY`: two pairs share an id only when they are the
    same pair, so an id is unique in a pairs table (a table where one repeats is not written)."""
    prefix = pair.get("prefix_steps")
    identity = [([] if prefix is None else list(prefix)) if name == "prefix_steps" else pair.get(name)
                for name in PAIR_IDENTITY]
    digest = hashlib.sha256(json.dumps(identity, ensure_ascii=False, default=_plain).encode()).hexdigest()[:16]
    return f"{pair['problem_id']}:{pair['kind']}:{digest}"


def pair_prompt_text(tokenizer: Any, prompt_messages: str | None, prefix_steps: Sequence[str]) -> str:
    """The exact text a model sees before chosen/rejected: the chat template with the
    partial answer plus the prefix steps, rendered by the same code the generators use."""
    from stepdata.generation.templates import render_prompt
    from stepdata.generation.types import GenerationRequest

    if not isinstance(prompt_messages, str) or not prompt_messages:
        raise ValueError("pair has no prompt_messages; cannot build its prompt")
    messages = json.loads(prompt_messages)
    prefix = join_steps(prefix_steps)
    if messages and messages[-1]["role"] == "assistant":
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + prefix}
    elif prefix:
        messages.append({"role": "assistant", "content": prefix})
    request = GenerationRequest.chat("pair", messages)
    return render_prompt(tokenizer, request)
