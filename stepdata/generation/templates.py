"""Rendering requests into the exact text a model sees.

Chat templates often trim message content, and ``continue_final_message`` in
transformers cuts the rendered chat at a stripped copy of the final message, so a
partial answer ending in "\\n" (a prefix of whole steps) would lose its newline
and the model would continue from a different place than the data says. Here the
final message is rendered as a placeholder and the placeholder is replaced by the
partial answer verbatim: the template runs once and the prefix is exact.
"""

from __future__ import annotations

from typing import Any

from stepdata.generation.types import GenerationRequest

_PLACEHOLDER = "\u2060\u2060stepdata-partial-answer\u2060\u2060"


def render_prompt(tokenizer: Any, request: GenerationRequest) -> str:
    """The text of ``request`` after the chat template (raw prompts are returned as is)."""
    if request.prompt is not None:
        return request.prompt
    messages = [dict(m) for m in request.messages or ()]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"request {request.request_id!r} is a chat but the tokenizer has no chat template; "
            "send a raw prompt instead or use a model with a template"
        )
    if not request.continue_final:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    partial = messages[-1]["content"]
    messages[-1] = {**messages[-1], "content": _PLACEHOLDER}
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    if not rendered.endswith(_PLACEHOLDER):
        raise ValueError(f"request {request.request_id!r}: the chat template does not end with the partial answer")
    return rendered[: -len(_PLACEHOLDER)] + partial


def encode_prompt(tokenizer: Any, request: GenerationRequest, text: str) -> list[int]:
    """Token ids for ``text``: a rendered chat already holds its special tokens; a raw prompt gets the tokenizer's."""
    return list(tokenizer(text, add_special_tokens=request.prompt is not None)["input_ids"])
