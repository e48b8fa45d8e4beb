"""Finding the final answer in a solution text.

Strategies, in order of how explicitly the writer marked the answer:

1. the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched with nesting;
2. the last ``#### N`` line (GSM8K's reference format);
3. the last "The (final) answer is ..." / "Answer: ...";
4. optionally, the last number in the text.

Every scan is linear in the text length, so a 100 kB completion or an unbalanced
brace costs milliseconds, never a hang.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_HASH_ANSWER = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)[ \t]*(?:is|:)[ \t:]*([^\n]+)",
    re.IGNORECASE,
)
_HOPE_SUFFIX = re.compile(r"\.?\s*I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?=\s)")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _braced(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at ``open_at``; None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{}``/``\\fbox{}`` in ``text``."""
    starts = [(text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS]
    start, cmd = max(starts)
    if start < 0:
        return None
    i = start + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        content = _braced(text, i)
        return None if content is None else content.strip()
    # "\boxed 5": the argument is the next token
    token = re.match(r"[^\s$]+", text[i:])
    return token.group(0) if token else None


def _clean(answer: str) -> str | None:
    """Trim what surrounds a stated answer: "I hope it is correct", $...$, a full stop."""
    # "Final Answer: The final answer is $5$." states the answer twice: keep the innermost.
    for _ in range(3):
        inner = _ANSWER_IS.search(answer)
        if inner is None:
            break
        answer = inner.group(1)
    answer = _HOPE_SUFFIX.sub("", answer)
    answer = _SENTENCE_END.split(answer, maxsplit=1)[0].strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer or None


def extract_answer(text: str | None, *, last_number_fallback: bool = True) -> str | None:
    """Return the final answer stated in ``text`` as a string, or None.

    The answer is returned as written (``"$1,250"`` stays ``"$1,250"``); deciding
    what it equals is :func:`stepdata.answers_match`'s job.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    hashes = _HASH_ANSWER.findall(text)
    if hashes and hashes[-1].strip():
        return _clean(hashes[-1])
    stated = _ANSWER_IS.findall(text)
    if stated:
        cleaned = _clean(stated[-1])
        if cleaned:
            return cleaned
    if last_number_fallback:
        numbers = _LAST_NUMBER.findall(text)
        if numbers:
            return numbers[-1].rstrip(",") or None
    return None
