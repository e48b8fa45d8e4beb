"""Turning one record of a known math data set into a problems-table row.

Each format knows where its data set keeps the question, the gold answer and the
reference solution, and says which field is wrong when a record lacks one. A
record is a dict as read from disk; a row is a dict with the problems columns.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from stepdata.answers.extract import last_boxed
from stepdata.loaders.readers import BadRowError, Location

Row = dict[str, Any]
Converter = Callable[[Mapping[str, Any], Location, Mapping[str, str]], Row]

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def number_text(value: Any) -> str:
    """Write a numeric gold answer the way people do: 27.0 -> "27", 0.5 -> "0.5"."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if not text:
        raise ValueError("empty answer")
    return text


def _text(record: Mapping[str, Any], key: str, location: Location, *, field: str | None = None) -> str:
    value = record.get(key)
    if value is None:
        raise BadRowError(location, field or key, "missing")
    if not isinstance(value, str):
        raise BadRowError(location, field or key, f"expected text, found {type(value).__name__}")
    if not value.strip():
        raise BadRowError(location, field or key, "empty")
    return value


def _number(record: Mapping[str, Any], key: str, location: Location) -> str:
    try:
        value = record[key]
        if value is None:
            raise ValueError("missing")
        return number_text(value)
    except KeyError:
        raise BadRowError(location, key, "missing") from None
    except (TypeError, ValueError) as exc:
        raise BadRowError(location, key, f"not a usable answer: {exc}") from None


def _meta(**items: Any) -> str:
    return json.dumps({k: v for k, v in items.items() if v is not None}, ensure_ascii=False, default=str)


def gsm8k(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """GSM8K: the gold answer follows "####"; the rationale keeps its <<a*b=c>> notes."""
    question = _text(record, columns.get("question", "question"), location, field="question")
    solution = _text(record, columns.get("answer", "answer"), location, field="answer")
    final = _GSM8K_FINAL.search(solution)
    if final is None:
        raise BadRowError(location, "answer", "no '#### <answer>' line in the solution")
    return {"question": question, "answer": final.group(1).strip(), "solution": solution}


def math_dataset(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """MATH / MATH-500: the answer field, or else the last \\boxed{} of the solution."""
    question = _text(record, columns.get("question", "problem"), location, field="problem")
    solution = record.get(columns.get("solution", "solution"))
    answer = record.get(columns.get("answer", "answer"))
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        answer = last_boxed(solution) if isinstance(solution, str) else None
        if not answer:
            raise BadRowError(location, "answer", "no answer field and no \\boxed{} in the solution")
    meta = _meta(subject=record.get("subject"), level=record.get("level"), unique_id=record.get("unique_id"))
    return {
        "problem_id": record.get("unique_id"),
        "question": question,
        "answer": str(answer).strip(),
        "solution": solution,
        "meta": meta,
    }


def svamp(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """SVAMP: question = Body + Question; the numeric Answer; the Equation as solution."""
    body = _text(record, "Body", location)
    ask = _text(record, "Question", location)
    question = f"{body.strip()} {ask.strip()}"
    return {
        "problem_id": record.get("ID"),
        "question": question,
        "answer": _number(record, "Answer", location),
        "solution": record.get("Equation"),
        "meta": _meta(type=record.get("Type")),
    }


def multiarith(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """MultiArith: sQuestion, the first of lSolutions, the first of lEquations."""
    question = _text(record, "sQuestion", location).strip()
    solutions = record.get("lSolutions")
    if not isinstance(solutions, list) or not solutions:
        raise BadRowError(location, "lSolutions", "missing or empty")
    try:
        answer = number_text(solutions[0])
    except (TypeError, ValueError) as exc:
        raise BadRowError(location, "lSolutions", f"not a usable answer: {exc}") from None
    equations = record.get("lEquations") or []
    index = record.get("iIndex")
    return {
        "problem_id": None if index is None else str(index),
        "question": question,
        "answer": answer,
        "solution": equations[0] if equations else None,
        "meta": _meta(),
    }


def processbench(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """ProcessBench: a problem with a model's steps and the human first-error label.

    It has no gold answer; the steps, the 0-based label (-1 = no error), the
    generator and whether the final answer is correct go into ``meta``. A bad
    record's error names its ``id`` too, which is how ProcessBench's people find it.
    """
    record_id = record.get("id")
    named = f" (record id {record_id!r})" if record_id is not None else ""
    try:
        question = _text(record, "problem", location)
    except BadRowError as exc:
        raise BadRowError(location, "problem", exc.message + named) from None
    steps = record.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise BadRowError(location, "steps", f"expected a list of strings{named}")
    if not steps:
        raise BadRowError(location, "steps", f"empty: a sample needs at least one step{named}")
    label = record.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < len(steps):
        raise BadRowError(location, "label", f"expected an index in [-1, {len(steps) - 1}], found {label!r}{named}")
    return {
        "problem_id": None if record_id is None else str(record_id),
        "question": question,
        "answer": None,
        "solution": None,
        "meta": _meta(
            steps=steps,
            label=label,
            generator=record.get("generator"),
            final_answer_correct=record.get("final_answer_correct"),
        ),
    }


_ASDIV_PART = re.compile(r"\s*(?P<value>.*?)\s*(?:\((?P<unit>[^()]*)\))?\s*")


def asdiv_answer(answer: str) -> tuple[str, list[str]]:
    """ASDiv's answer as (gold, units): ``9 (apples)`` -> ("9", ["apples"]); several answers are separated by
    ";" (``5 (years old); 15 (years old)`` -> "5; 15"); an answer without a unit (``3:30 p.m.``, a name) is kept
    as it is. Raises ValueError for a part with no value."""
    values, units = [], []
    for part in answer.split(";"):
        match = _ASDIV_PART.fullmatch(part)
        value = match.group("value") if match else ""
        if not value:
            raise ValueError(f"no value in {part.strip()!r}")
        values.append(value)
        if match and match.group("unit") is not None:
            units.append(match.group("unit").strip())
    return "; ".join(values), units


def asdiv(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """ASDiv: question = Body + Question; the gold answer without its unit (the unit, grade, solution type and
    the formula, which is also the solution, go into ``meta``); a bad record's error names its ID too."""
    record_id = record.get("ID")
    named = f" (record id {record_id!r})" if record_id is not None else ""

    def text(key: str) -> str:
        try:
            return _text(record, key, location)
        except BadRowError as exc:
            raise BadRowError(location, key, exc.message + named) from None

    body, ask, answer = text("Body"), text("Question"), text("Answer")
    try:
        gold, units = asdiv_answer(answer)
    except ValueError as exc:
        raise BadRowError(location, "Answer", f"{exc}{named}") from None
    formula = record.get("Formula")
    return {
        "problem_id": None if record_id is None else str(record_id),
        "question": f"{body.strip()} {ask.strip()}",
        "answer": gold,
        "solution": formula.strip() if isinstance(formula, str) and formula.strip() else None,
        "meta": _meta(unit=(units[0] if len(units) == 1 else units) or None, grade=record.get("Grade"),
                      solution_type=record.get("Solution-Type"), formula=formula, source_url=record.get("Source"),
                      problem_class=record.get("Class"), fold=record.get("fold")),
    }


_GENERIC_ALIASES = {
    "question": ("question", "problem", "prompt", "query", "input"),
    "answer": ("answer", "final_answer", "gold", "target", "label"),
    "solution": ("solution", "rationale", "reasoning", "explanation"),
    "problem_id": ("problem_id", "id", "uid", "unique_id"),
}


def generic(record: Mapping[str, Any], location: Location, columns: Mapping[str, str]) -> Row:
    """Any table: columns found by ``columns`` (ours -> theirs) or by common names."""

    def pick(ours: str) -> str | None:
        if ours in columns:
            return columns[ours]
        return next((name for name in _GENERIC_ALIASES[ours] if name in record), None)

    question_key = pick("question")
    if question_key is None:
        raise BadRowError(location, "question", f"no question column (looked for {list(_GENERIC_ALIASES['question'])}; map one with columns=)")
    answer_key = pick("answer")
    if answer_key is None:
        raise BadRowError(location, "answer", f"no answer column (looked for {list(_GENERIC_ALIASES['answer'])}; map one with columns=)")
    solution_key, id_key = pick("solution"), pick("problem_id")
    known = {question_key, answer_key, solution_key, id_key}
    extra = {k: v for k, v in record.items() if k not in known}
    return {
        "problem_id": None if id_key is None or record.get(id_key) is None else str(record[id_key]),
        "question": _text(record, question_key, location, field=question_key),
        "answer": _number(record, answer_key, location),
        "solution": record.get(solution_key) if solution_key else None,
        "meta": json.dumps(extra, ensure_ascii=False, default=str) if extra else None,
    }


FORMATS: dict[str, Converter] = {
    "gsm8k": gsm8k,
    "math": math_dataset,
    "svamp": svamp,
    "multiarith": multiarith,
    "processbench": processbench,
    "asdiv": asdiv,
    "generic": generic,
}


def detect_format(record: Mapping[str, Any]) -> str:
    """Guess a record's data set from its keys (and GSM8K's "####")."""
    keys = set(record)
    if {"problem", "steps", "label"} <= keys:
        return "processbench"
    if {"Body", "Question", "Answer"} <= keys and ("Solution-Type" in keys or "Formula" in keys):
        return "asdiv"
    if {"Body", "Question", "Answer"} <= keys:
        return "svamp"
    if {"sQuestion", "lSolutions"} <= keys:
        return "multiarith"
    if "problem" in keys and ("solution" in keys or "answer" in keys):
        return "math"
    if {"question", "answer"} <= keys and "####" in str(record.get("answer", "")):
        return "gsm8k"
    return "generic"
