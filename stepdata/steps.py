"""Splitting a solution into steps, losslessly.

Every step keeps its own text exactly, including its "Step k:" marker and the
whitespace that follows it, so ``join_steps(split_steps(t)) == t`` for any text.
That matters downstream: a prefix rebuilt from steps 0..k-1 must be byte-for-byte
the text the model produced, or a continuation from it is no longer
in-distribution and a pair's chosen and rejected steps no longer share a prefix.

Three ways to cut, chosen per text (``mode="auto"``) or forced:

- ``markers``: a new step starts at each line that begins with "Step k:" (also
  "**Step k.**", "### Step k)", any case). Text before the first marker is a step
  of its own, which is what a completion looks like when the prompt already
  ended with "Step 1:".
- ``paragraphs``: a new step starts after each blank line.
- ``lines``: a new step starts after each newline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

SplitMode = Literal["auto", "markers", "paragraphs", "lines"]

STEP_MARKER = re.compile(
    r"^[ \t]*(?:[#>*-]+[ \t]*)?(?:\*\*)?step[ \t]*(\d+)[ \t]*(?:\*\*)?[ \t]*[:.)](?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)
_BLANK_LINE_RUN = re.compile(r"\n(?:[ \t]*\n)+")
_NEWLINE_RUN = re.compile(r"\n(?:[ \t]*\n)*")


def _cut(text: str, starts: Sequence[int]) -> list[str]:
    """Cut ``text`` at ``starts``; whitespace-only pieces join the following piece."""
    bounds = sorted({0, *[s for s in starts if 0 < s < len(text)], len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    steps: list[str] = []
    carry = ""
    for piece in pieces:
        if piece.strip():
            steps.append(carry + piece)
            carry = ""
        else:
            carry += piece
    if carry:
        if steps:
            steps[-1] += carry
        else:
            steps.append(carry)
    return steps


def detect_mode(text: str) -> SplitMode:
    """Pick how ``text`` is structured: markers, else paragraphs, else lines."""
    if STEP_MARKER.search(text):
        return "markers"
    if _BLANK_LINE_RUN.search(text.strip()):
        return "paragraphs"
    return "lines"


def split_steps(text: str, mode: SplitMode = "auto") -> list[str]:
    """Split ``text`` into steps whose concatenation is exactly ``text``.

    Returns [] for an empty string. No step is empty; whitespace between steps
    stays at the end of the step it follows.
    """
    if not text:
        return []
    if mode == "auto":
        mode = detect_mode(text)
    if mode == "markers":
        starts = [m.start() for m in STEP_MARKER.finditer(text)]
    elif mode == "paragraphs":
        starts = [m.end() for m in _BLANK_LINE_RUN.finditer(text)]
    elif mode == "lines":
        starts = [m.end() for m in _NEWLINE_RUN.finditer(text)]
    else:
        raise ValueError(f"unknown split mode {mode!r}; expected auto, markers, paragraphs or lines")
    return _cut(text, starts)


def join_steps(steps: Sequence[str]) -> str:
    """Rebuild the text of ``steps`` (the inverse of :func:`split_steps`)."""
    return "".join(steps)


def step_body(step: str) -> str:
    """The step's content without its "Step k:" marker and surrounding whitespace (for display)."""
    return STEP_MARKER.sub("", step, count=1).strip()


def numbered_steps(steps: Sequence[str]) -> str:
    """Steps as "Step k: ..." lines from 1, any marker the text had replaced (what a judge or a revision prompt
    is shown)."""
    return "\n".join(f"Step {i + 1}: {step_body(step)}" for i, step in enumerate(steps))


_SPACE_RUN = re.compile(r"\s+")


def normalized_step(step: str) -> str:
    """A step compared as people read it: whitespace collapsed (two steps equal here are one step)."""
    return _SPACE_RUN.sub(" ", step).strip()


def step_label(index: int) -> str:
    """How people see step ``index`` (0-based in data): "Step 1" for index 0."""
    return f"Step {index + 1}"


_GSM8K_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.DOTALL)
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def to_step_format(solution: str, answer: str | None = None) -> str:
    """``solution`` as "Step 1: ...\\nStep 2: ...\\nThe answer is X." (unchanged if it has step markers).

    GSM8K-style references (one computation a line, calculator notes, ``#### X``)
    become one step a line, notes removed, and a final answer line, which is the
    format the step-forcing prompt asks the model for.
    """
    if STEP_MARKER.search(solution):
        return solution
    final = _GSM8K_FINAL.search(solution)
    body = solution[: final.start()] if final else solution
    answer = answer if answer is not None else (final.group(1) if final else None)
    lines = [line.strip() for line in _CALCULATOR.sub("", body).splitlines() if line.strip()]
    steps = [f"Step {i + 1}: {line}" for i, line in enumerate(lines)]
    if answer is not None:
        steps.append(f"The answer is {answer}.")
    return "\n".join(steps)


def strip_partial_overlap(partial: str, text: str) -> str:
    """``text`` without the start that the template's partial answer already wrote.

    The step-forcing prompt ends with "Step 1:" and a reference solution starts
    with "Step 1:"; the model must be taught (and resumed) from after it.
    """
    for k in range(min(len(partial), len(text)), 0, -1):
        if partial.endswith(text[:k]):
            return text[k:]
    return text
