"""Prompt templates, kept as plain files in ``prompts/`` so people can read and edit them.

A template file is a chat in sections headed ``[system]``, ``[user]`` and
``[assistant]``; ``{{name}}`` marks a field. A final ``[assistant]`` section is
a partial answer the model continues (e.g. "Let's think step by step.\\nStep 1:"),
which is how a prompt forces the step format. Fields are replaced literally
(no ``str.format``), so LaTeX braces in a question are never misread.

Templates are found in the installed package (``stepdata/prompts``, where the
wheel puts them) or, in a source checkout, in ``prompts/`` at the repository root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SECTION = re.compile(r"^\[(system|user|assistant)\][ \t]*$", re.MULTILINE)
_FIELD = re.compile(r"\{\{(\w+)\}\}")


def prompts_dir() -> Path:
    """The folder holding the shipped templates."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"prompt templates not found next to {here}")


def list_prompts() -> list[str]:
    """Names of the shipped templates."""
    return sorted(p.stem for p in prompts_dir().glob("*.txt"))


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template: chat messages with ``{{field}}`` placeholders."""

    name: str
    messages: tuple[tuple[str, str], ...]  # (role, text)

    @classmethod
    def from_text(cls, name: str, text: str) -> PromptTemplate:
        parts = _SECTION.split(text)
        if parts[0].strip():
            raise ValueError(f"prompt {name!r}: text before the first [role] header")
        messages = []
        for role, body in zip(parts[1::2], parts[2::2]):
            body = body.removeprefix("\n")
            body = body.removesuffix("\n")
            messages.append((role, body))
        if not messages:
            raise ValueError(f"prompt {name!r}: no [system]/[user]/[assistant] sections")
        return cls(name, tuple(messages))

    @property
    def fields(self) -> set[str]:
        return {f for _, text in self.messages for f in _FIELD.findall(text)}

    @property
    def continues_assistant(self) -> bool:
        """True when the last message is a partial answer for the model to continue."""
        return self.messages[-1][0] == "assistant"

    def render(self, **values: str) -> list[dict[str, str]]:
        """The chat with fields filled in; a missing field is an error naming it."""
        missing = self.fields - set(values)
        if missing:
            raise KeyError(f"prompt {self.name!r} needs field(s) {sorted(missing)}")

        def fill(text: str) -> str:
            return _FIELD.sub(lambda m: str(values[m.group(1)]), text)

        return [{"role": role, "content": fill(text)} for role, text in self.messages]

    def render_continuing(self, prefix: str, **values: str) -> list[dict[str, str]]:
        """The chat with the partial answer extended by ``prefix`` (steps the model wrote before).

        This is how every stage resumes a solution mid-way: the model sees its own
        earlier steps as the start of its answer, byte for byte.
        """
        if not self.continues_assistant:
            raise ValueError(f"prompt {self.name!r} must end with a partial [assistant] answer to continue from")
        messages = self.render(**values)
        messages[-1]["content"] += prefix
        return messages


def load_prompt(name_or_path: str) -> PromptTemplate:
    """Load a shipped template by name (``step_by_step``) or any template file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = prompts_dir() / f"{name_or_path}.txt"
        if not path.exists():
            raise FileNotFoundError(f"no prompt named {name_or_path!r}; shipped prompts: {list_prompts()}")
    return PromptTemplate.from_text(path.stem, path.read_text(encoding="utf-8"))
