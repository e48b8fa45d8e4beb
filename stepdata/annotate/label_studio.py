"""Label Studio, for teams that already annotate there: tasks out, exported annotations in.

Out: one task per solution (``{"data": {...}}``, a JSON list Label Studio imports), whose
data holds the question, the solution with its steps numbered from 1
(:func:`~stepdata.steps.numbered_steps`), the steps as a list, and what ties a label to
the solution (solution and problem ids, ``steps_sha256``, ``table_fingerprint``); and the
labelling config we ship (``label_studio.xml``: a single-choice ``verdict`` whose
aliases are our labels, a ``first_wrong_step`` number from 1 and a ``corrected_step``
text area).

In: Label Studio's JSON export (a list of tasks, each with its ``data`` as imported and
its ``annotations``: ``result`` items with ``from_name``, ``type`` and ``value``, and
``was_cancelled``, ``completed_by``, ``created_at``/``updated_at``). Each task's most
recent annotation that was not cancelled gives its label (``choices``, ``number`` and
``textarea`` values read as Label Studio writes them); tasks nobody annotated, cancelled
and older annotations are counted in :attr:`LabelSet.skipped`, never silently dropped. A
task or annotation that does not read is a :class:`LabelsError` naming the task and field.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from stepdata.annotate.labels import (
    LABELS,
    Label,
    LabelsError,
    LabelSet,
    label_from_record,
)
from stepdata.annotate.source import AnnotationSet, Item
from stepdata.io import write_text_atomic
from stepdata.steps import numbered_steps

VERDICT, STEP, CORRECTED = "verdict", "first_wrong_step", "corrected_step"
# the verdict as Label Studio shows it (without the aliases an edited config may have dropped) -> our label
SHOWN = {"At a step (give its number below)": "step", "No error": "no_error", "Can't tell": "cant_tell"}


def label_config() -> str:
    """The labelling config (XML) the tasks are made for; paste it into the project's Labeling Interface."""
    return resources.files("stepdata.annotate").joinpath("label_studio.xml").read_text(encoding="utf-8")


def task_for(item: Item, fingerprint: str, source_table: str) -> dict[str, Any]:
    """One Label Studio task for one solution (module doc)."""
    gold = item.gold if item.gold is not None else "not known"
    pred = item.pred_answer if item.pred_answer is not None else "none stated"
    return {"data": {
        "solution_id": item.solution_id, "problem_id": item.problem_id,
        "question": item.question if item.question is not None else f"(question not known; the prompt was:)\n{item.prompt or ''}",
        "answers": f"Gold answer: {gold}. The solution's answer: {pred}."
                   + ("" if item.finished else " (Cut at max_tokens: its last steps were never written.)"),
        "solution": numbered_steps(item.steps), "steps": list(item.steps), "n_steps": len(item.steps),
        "gold": item.gold, "pred_answer": item.pred_answer,
        "table_fingerprint": fingerprint, "steps_sha256": item.steps_sha256, "source_table": source_table,
    }}


def write_tasks(annotation: AnnotationSet, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the tasks of ``annotation`` to ``path`` (JSON) and the labelling config beside it
    (``PATH.label_config.xml``); returns both paths."""
    source = Path(annotation.source).name
    tasks = [task_for(item, annotation.fingerprint, source) for item in annotation.items]
    out = write_text_atomic(path, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    config = write_text_atomic(Path(path).with_name(Path(path).stem + ".label_config.xml"), label_config())
    return out, config


def _annotator(completed_by: Any) -> str | None:
    """Who annotated, as Label Studio's export names them: a user id, or a user object with an email."""
    if isinstance(completed_by, dict):
        name = completed_by.get("email") or completed_by.get("id")
        return None if name is None else (str(name) if "@" in str(name) else f"label-studio user {name}")
    if completed_by is None or completed_by == "":
        return None
    return str(completed_by) if isinstance(completed_by, str) else f"label-studio user {completed_by}"


def _results(annotation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The annotation's result items by control name (``from_name``)."""
    results = annotation.get("result")
    if not isinstance(results, list):
        raise LabelsError(f"{where}: field 'result' must be a list of results, got {results!r}")
    found: dict[str, dict[str, Any]] = {}
    for item in results:
        if isinstance(item, dict) and isinstance(item.get("value"), dict) and isinstance(item.get("from_name"), str):
            found[item["from_name"]] = item["value"]
    return found


def _verdict(value: dict[str, Any] | None, where: str) -> str:
    choices = (value or {}).get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
        raise LabelsError(f"{where}: result {VERDICT!r} must hold one choice (value.choices), got {choices!r}")
    choice = choices[0]
    if choice in LABELS:
        return choice
    if choice in SHOWN:
        return SHOWN[choice]
    raise LabelsError(f"{where}: result {VERDICT!r} is {choice!r}; expected one of {list(LABELS)} (the config's aliases)")


def _step(value: dict[str, Any] | None, where: str) -> Any:
    if value is None:
        return None
    number = value.get("number")
    if isinstance(number, float) and number.is_integer():
        return int(number)
    if isinstance(number, bool) or not isinstance(number, int):
        raise LabelsError(f"{where}: result {STEP!r} must be a whole number (value.number), got {number!r}")
    return number


def _corrected(value: dict[str, Any] | None, where: str) -> str | None:
    if value is None:
        return None
    text = value.get("text")
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        raise LabelsError(f"{where}: result {CORRECTED!r} must hold text (value.text), got {text!r}")
    return "\n".join(text) or None


def _label_of_task(task: Any, where: str, skipped: dict[str, int]) -> Label | None:
    if isinstance(task, dict) and "annotations" not in task:
        raise LabelsError(f"{where}: no 'annotations' field: export the project from Label Studio as JSON "
                          "(JSON-MIN and CSV leave out what a label needs)")
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise LabelsError(f"{where}: a Label Studio task is an object with a 'data' object")
    annotations = task["annotations"]
    if not isinstance(annotations, list):
        raise LabelsError(f"{where}: field 'annotations' must be a list, got {annotations!r}")
    live = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    skipped["cancelled_annotations"] = skipped.get("cancelled_annotations", 0) + len(annotations) - len(live)
    if not live:
        skipped["tasks_without_annotation"] = skipped.get("tasks_without_annotation", 0) + 1
        return None
    # the most recent annotation is the task's label; older ones are counted
    latest = max(enumerate(live), key=lambda ia: (str(ia[1].get("updated_at") or ia[1].get("created_at") or ""), ia[0]))[1]
    skipped["older_annotations"] = skipped.get("older_annotations", 0) + len(live) - 1
    where = f"{where}, annotation {latest.get('id', '?')}"
    results = _results(latest, where)
    label = _verdict(results.get(VERDICT), where)
    data = task["data"]
    record = {name: data.get(name) for name in ("solution_id", "problem_id", "table_fingerprint", "steps_sha256",
                                                "source_table")}
    record |= {"label": label, "step": _step(results.get(STEP), where) if label == "step" else None,
               "corrected_step": _corrected(results.get(CORRECTED), where) if label == "step" else None,
               "annotator": _annotator(latest.get("completed_by")),
               "time": latest.get("updated_at") or latest.get("created_at")}
    return label_from_record({k: v for k, v in record.items() if v is not None}, where)


def read_label_studio(path: str | os.PathLike) -> LabelSet:
    """The labels in a Label Studio JSON export of our tasks (module doc)."""
    try:
        tasks = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelsError(f"{path}: not JSON in UTF-8 ({exc})") from None
    if not isinstance(tasks, list):
        raise LabelsError(f"{path}: a Label Studio export is a JSON list of tasks, not {type(tasks).__name__}")
    labels, skipped = [], {"tasks_without_annotation": 0, "cancelled_annotations": 0, "older_annotations": 0}
    for number, task in enumerate(tasks, start=1):
        task_id = task.get("id", "?") if isinstance(task, dict) else "?"
        label = _label_of_task(task, f"{path} task {task_id} (item {number})", skipped)
        if label is not None:
            labels.append(label)
    if not labels:
        raise LabelsError(f"{path}: none of its {len(tasks)} tasks has an annotation that was not cancelled")
    return LabelSet(str(path), "label-studio", labels, skipped)
