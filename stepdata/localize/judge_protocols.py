"""What a judge is shown and how its reply is read: the two protocols, their templates and parsers.

A protocol fixes three things that must agree with each other:

- the variables its template may use (``{{question}}``, and the steps written the way
  the protocol numbers them: ``{{tagged_steps}}`` from 0, ``{{numbered_steps}}`` from 1);
- how a reply is read (the index base of the answer follows the steps it was shown);
- its shipped template (``prompts/judge_<protocol>.txt``), which a user may replace with
  a file of their own (``--judge-template``), rendered with the same variables.

``processbench``: paragraphs tagged ``<paragraph_i>`` from 0; the judge reasons, then
gives the index in ``\\boxed{}`` (-1: no error). Only the reply's final box is read.

``stepdpo``: the reference solution and steps numbered from 1; the judge writes its
analysis first and ends with one decision line, ``Decision: step k`` or ``Decision:
none``. Only the last decision line is read, so a "step 2" in the analysis is never
taken for the verdict.

A reply that does not end in the protocol's form is unreadable (None), never guessed.
A template that uses a variable its protocol does not give, or that shows the judge
no steps, is refused when it is loaded, naming the file and the variables.

The judge's decoding follows ProcessBench's reference harness (QwenLM/ProcessBench,
``code/run_eval.py``): one greedy reply, or with ``votes > 1`` sampling at temperature
1.0 and top_p 0.9 (:func:`judge_decoding`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stepdata.answers.extract import last_boxed
from stepdata.prompts import PromptTemplate, load_prompt
from stepdata.steps import numbered_steps

# ProcessBench's voting protocol: sampled votes at these settings (greedy for a single vote)
VOTING_TEMPERATURE = 1.0
VOTING_TOP_P = 0.9
# long enough for a critique; ProcessBench's reference harness allows 8192 tokens (32768 for QwQ)
JUDGE_MAX_TOKENS = 8192


def judge_decoding(votes: int, temperature: float | None = None, top_p: float | None = None) -> tuple[float, float]:
    """(temperature, top_p) of a judge with ``votes`` samples; a value given wins.

    One vote is greedy (temperature 0; top_p 1.0, which greedy ignores); more votes
    sample at 1.0 / 0.9. Greedy with several votes would give identical votes (and
    vLLM refuses it), so a temperature of 0 with ``votes > 1`` is an error.
    """
    if votes < 1:
        raise ValueError(f"votes must be >= 1, got {votes}")
    if temperature is None:
        temperature = 0.0 if votes == 1 else VOTING_TEMPERATURE
    if top_p is None:
        top_p = 1.0 if votes == 1 else VOTING_TOP_P
    if temperature == 0 and votes > 1:
        raise ValueError(f"a judge temperature of 0 (greedy) with {votes} votes gives {votes} identical votes; "
                         "use one vote, or a temperature > 0")
    return float(temperature), float(top_p)


# -- reading replies ---------------------------------------------------------------------------------

def parse_boxed_index(reply: str, n_steps: int) -> int | None:
    """The index in the reply's final \\boxed{} if it is -1 or a valid step index, else None.

    Only the last box counts: a box the judge wrote while reasoning and then revised is
    not read, and a final box that is not an index makes the reply unreadable.
    """
    boxed = last_boxed(reply or "")
    if boxed is None:
        return None
    match = re.fullmatch(r"\s*(-?\d+)\s*", boxed)
    if match is None:
        return None
    index = int(match.group(1))
    return index if -1 <= index < n_steps else None


# a decision line: "Decision: step 3" / "Decision: none", with markdown emphasis or a heading mark tolerated
_DECISION_START = re.compile(r"^[\s>#*_]*decision\b", re.IGNORECASE)
_DECISION = re.compile(r"decision\s*:\s*(?:step\s*(\d+)|(none))\s*\.?", re.IGNORECASE)


def parse_decision_line(reply: str, n_steps: int) -> int | None:
    """The step named by the reply's last decision line, 0-based; -1 for "none"; None if unreadable.

    The last line that starts with "Decision" is the verdict; the analysis before it
    is not read (it may mention any step). That line must say ``Decision: step k``
    (k from 1 to ``n_steps``) or ``Decision: none``, nothing else; without one the
    reply is unreadable.
    """
    lines = [line for line in (reply or "").splitlines() if _DECISION_START.match(line)]
    if not lines:
        return None
    text = re.sub(r"[*_`]", "", lines[-1]).strip().lstrip(">#").strip()
    match = _DECISION.fullmatch(text)
    if match is None:
        return None
    if match.group(2):
        return -1
    step = int(match.group(1))
    return step - 1 if 1 <= step <= n_steps else None


# -- what the judge is shown -------------------------------------------------------------------------

def tagged_steps(steps: Sequence[str]) -> str:
    """Steps as ProcessBench shows them: each in ``<paragraph_i>`` tags, from 0."""
    return "\n\n".join(f"<paragraph_{i}>\n{step.strip()}\n</paragraph_{i}>" for i, step in enumerate(steps))


@dataclass(frozen=True)
class JudgeProtocol:
    """One protocol: its variables (what fills each), which of them show the steps, and its parser."""

    name: str
    variables: dict[str, Callable[[str, Sequence[str], str | None], str]]
    step_variables: frozenset[str]
    parse: Callable[[str, int], int | None]
    answer_form: str  # how the reply must end, for messages

    def values(self, question: str, steps: Sequence[str], reference: str | None) -> dict[str, str]:
        return {name: fill(question, steps, reference) for name, fill in self.variables.items()}

    def check(self, template: PromptTemplate, source: str) -> PromptTemplate:
        """``template`` if this protocol can render it; else a ValueError naming ``source`` and the variables."""
        unknown = template.fields - set(self.variables)
        if unknown:
            raise ValueError(f"judge template {source}: unknown variable(s) {sorted(unknown)}; the {self.name} "
                             f"protocol gives {sorted(self.variables)}")
        if "question" not in template.fields or not template.fields & self.step_variables:
            steps = " or ".join("{{" + v + "}}" for v in sorted(self.step_variables))
            text = "\n".join(body for _, body in template.messages)
            hint = ("; it looks like a str.format template (ProcessBench's own): write {{question}} for {problem}, "
                    "{{tagged_steps}} for {tagged_response} and \\boxed{} for \\boxed{{}}"
                    if re.search(r"(?<!\{)\{(problem|tagged_response)\}(?!\})", text) else "")
            raise ValueError(f"judge template {source}: it must show the question and the steps ({{{{question}}}} and "
                             f"{steps}); it uses {sorted(template.fields) or 'no variables'}{hint}")
        if template.continues_assistant:
            raise ValueError(f"judge template {source}: it ends with an [assistant] section; a judge prompt ends "
                             "with the [user] message the judge answers")
        return template


PROTOCOLS: dict[str, JudgeProtocol] = {
    "processbench": JudgeProtocol(
        "processbench",
        {"question": lambda q, steps, ref: q, "tagged_steps": lambda q, steps, ref: tagged_steps(steps)},
        frozenset({"tagged_steps"}), parse_boxed_index,
        "the index of the first wrong paragraph (from 0) in \\boxed{}, -1 for none"),
    "stepdpo": JudgeProtocol(
        "stepdpo",
        {"question": lambda q, steps, ref: q, "numbered_steps": lambda q, steps, ref: numbered_steps(steps),
         "reference": lambda q, steps, ref: ref or "(none given)"},
        frozenset({"numbered_steps"}), parse_decision_line,
        "a last line 'Decision: step k' (k from 1) or 'Decision: none'"),
}


def protocol_named(name: str) -> JudgeProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown judge protocol {name!r}; expected one of {sorted(PROTOCOLS)}") from None


_HEADER = re.compile(r"^\[(system|user|assistant)\][ \t]*$", re.MULTILINE)


def judge_template(protocol: str, path: str | Path | None = None) -> PromptTemplate:
    """The protocol's shipped template, or the file at ``path`` checked against the protocol's variables.

    The file is a template as in ``prompts/`` (``[system]``/``[user]`` sections); a file
    with no section header at all is taken as the one user message, as a published
    prompt usually is.
    """
    spec = protocol_named(protocol)
    if path is None:
        return load_prompt(f"judge_{protocol}")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"judge template {path}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
        if not _HEADER.search(text):  # a plain prompt (as published): the one user message
            text = "[user]\n" + text
        template = PromptTemplate.from_text(file.name, text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"judge template {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise ValueError(f"judge template {path}: {exc}") from None
    return spec.check(template, str(path))


def template_fingerprint(path: str | Path) -> dict[str, str]:
    """What a run records of a template file: its path and the SHA-256 of its bytes (a changed file is noticed)."""
    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
