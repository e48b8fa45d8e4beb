"""People's first-error labels: one record per solution, how they are written, read and checked.

A label says what a person found in one wrong solution: its first wrong step
(``"step"``, with the step number as the person saw it, counted from 1), ``"no_error"``
or ``"cant_tell"``, optionally with a corrected step they typed. It also carries what
ties it to the solution the person read: the solution's id, a hash of its steps
(``steps_sha256``) and the fingerprint of the table the page was made from
(``table_fingerprint``), so labels are never applied to other text (a re-sampled
rollout with the same id, another run's table): :func:`check_labels_fit` refuses them,
naming the mismatch.

The file ``stepdata annotate``'s page saves is JSON lines, one object per labelled
solution (:data:`FIELDS`). Steps are counted from 1 there, as people count them;
:attr:`Label.error_step` is the 0-based index the data uses (``step`` 3 is
``error_step`` 2). Reading is strict: a line that is not a JSON object, a missing or
mistyped field, an unknown field (a typo would silently drop a correction) or a
solution labelled twice is a :class:`LabelsError` naming the file, line and field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

LABELS = ("step", "no_error", "cant_tell")
REQUIRED = ("solution_id", "problem_id", "label", "table_fingerprint", "steps_sha256")
OPTIONAL = ("step", "corrected_step", "annotator", "time", "source_table")
FIELDS = REQUIRED + OPTIONAL
FORMATS = ("auto", "jsonl", "label-studio")


class LabelsError(ValueError):
    """A labels file that cannot be used as it is; the message names the file, the line (or task) and the field."""


def steps_sha256(steps: Sequence[str]) -> str:
    """The hash of a solution's steps that a label records: the steps the person read, exactly."""
    return hashlib.sha256(json.dumps(list(steps), ensure_ascii=False).encode("utf-8")).hexdigest()


def solutions_fingerprint(solutions: Iterable[tuple[str, Sequence[str]]]) -> str:
    """The fingerprint of a set of (solution id, steps): what a page was made from, in any row order.

    A rollouts table and the localized table made from it hold the same wrong solutions, so
    they have the same fingerprint (a page made from either fits labels imported to either).
    """
    lines = sorted(f"{solution_id}\t{steps_sha256(steps)}" for solution_id, steps in solutions)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Label:
    """One person's verdict on one solution (module doc). ``where`` says where it was read ("FILE line 3")."""

    solution_id: str
    problem_id: str
    label: str
    table_fingerprint: str
    steps_sha256: str
    step: int | None = None  # 1-based, as shown; only with label "step"
    corrected_step: str | None = None  # only with label "step"
    annotator: str | None = None
    time: str | None = None  # ISO 8601
    source_table: str | None = None
    where: str = ""

    @property
    def error_step(self) -> int | None:
        """The 0-based first wrong step (None unless the label is "step")."""
        return None if self.step is None else self.step - 1

    def record(self) -> dict[str, Any]:
        """The JSON object of this label in a labels file (``where`` is not written)."""
        return {name: getattr(self, name) for name in FIELDS}


@dataclass
class LabelSet:
    """The labels of one file, by solution id, and what reading it left out (``skipped``: counts by reason)."""

    path: str
    format: str
    labels: list[Label]
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_solution: dict[str, Label] = {}
        for label in self.labels:
            seen = self.by_solution.get(label.solution_id)
            if seen is not None:
                raise LabelsError(f"solution {label.solution_id!r} is labelled twice ({seen.where} and {label.where}); "
                                  "keep one label per solution")
            self.by_solution[label.solution_id] = label

    @property
    def fingerprints(self) -> list[str]:
        """The table fingerprints the labels were made for (one, unless files of several pages were joined)."""
        return sorted({label.table_fingerprint for label in self.labels})

    @property
    def sources(self) -> list[str]:
        return sorted({label.source_table for label in self.labels if label.source_table})


def _text(record: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise LabelsError(f"{where}: field {name!r} is missing")
        return None
    if not isinstance(value, str) or (required and not value):
        raise LabelsError(f"{where}: field {name!r} must be {'non-empty ' if required else ''}text, got {value!r}")
    return value


def label_from_record(record: Any, where: str) -> Label:
    """A :class:`Label` from one JSON object, checked field by field (errors name ``where`` and the field)."""
    if not isinstance(record, dict):
        raise LabelsError(f"{where}: a label is a JSON object, not {type(record).__name__}")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise LabelsError(f"{where}: unknown field(s) {unknown}; a label has {list(FIELDS)}")
    values = {name: _text(record, name, where, required=True) for name in REQUIRED}
    label = values["label"]
    if label not in LABELS:
        raise LabelsError(f"{where}: field 'label' must be one of {list(LABELS)}, got {label!r}")
    step = record.get("step")
    if label == "step":
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise LabelsError(f"{where}: field 'step' must be the first wrong step as shown, an integer >= 1 "
                              f"(steps are counted from 1), got {step!r}")
    elif step is not None:
        raise LabelsError(f"{where}: field 'step' is {step!r} but the label is {label!r} (a step goes with label 'step')")
    corrected = _text(record, "corrected_step", where, required=False)
    if corrected is not None and not corrected.strip():
        corrected = None  # an emptied text box is no correction
    if corrected is not None and label != "step":
        raise LabelsError(f"{where}: field 'corrected_step' is given but the label is {label!r} "
                          "(a corrected step replaces a first wrong step)")
    time = _text(record, "time", where, required=False)
    if time is not None:
        try:
            datetime.fromisoformat(time.replace("Z", "+00:00"))
        except ValueError:
            raise LabelsError(f"{where}: field 'time' must be an ISO 8601 time, got {time!r}") from None
    return Label(values["solution_id"], values["problem_id"], label, values["table_fingerprint"],
                 values["steps_sha256"], step=step if label == "step" else None, corrected_step=corrected,
                 annotator=_text(record, "annotator", where, required=False) or None, time=time,
                 source_table=_text(record, "source_table", where, required=False), where=where)


def read_labels_jsonl(path: str | os.PathLike) -> LabelSet:
    """The labels of a JSON lines file (module doc); blank lines are skipped, anything else is checked."""
    labels = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path} line {number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise LabelsError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelsError(f"{where}: not JSON ({exc})") from None
            labels.append(label_from_record(record, where))
    if not labels:
        raise LabelsError(f"{path} holds no labels (the page saves only the solutions that were labelled)")
    return LabelSet(str(path), "jsonl", labels)


def write_labels_jsonl(labels: Iterable[Label], path: str | os.PathLike) -> Path:
    """Write ``labels`` as the page saves them (one JSON object a line)."""
    from stepdata.io import write_text_atomic

    text = "".join(json.dumps(label.record(), ensure_ascii=False) + "\n" for label in labels)
    return write_text_atomic(path, text)


def detect_format(path: str | os.PathLike) -> str:
    """"jsonl" or "label-studio" by content: Label Studio exports one JSON list of tasks, the page JSON lines."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "label-studio" if head.startswith(b"[") else "jsonl"


def read_labels(path: str | os.PathLike, labels_format: str = "auto") -> LabelSet:
    """The labels in ``path``: the page's JSON lines or Label Studio's JSON export (``labels_format``)."""
    if labels_format not in FORMATS:
        raise LabelsError(f"labels format must be one of {list(FORMATS)}, got {labels_format!r}")
    if not Path(path).is_file():
        raise LabelsError(f"labels file {path} does not exist")
    fmt = detect_format(path) if labels_format == "auto" else labels_format
    if fmt == "label-studio":
        from stepdata.annotate.label_studio import read_label_studio

        return read_label_studio(path)
    return read_labels_jsonl(path)


def check_labels_fit(labels: LabelSet, solutions: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Refuse labels made for other text than ``solutions`` (solution id -> steps); return how they fit.

    Refused (:class:`LabelsError`, naming the labels' table and this input's fingerprint): a
    labelled solution whose steps here differ from the ones the person read, a label whose step
    is past the solution's last step, and labels none of whose solutions are here (labels for
    another table). Labels for solutions that are not here are allowed (the page may cover more
    rows than a ``--limit`` run): they are counted and named by the caller.
    """
    here = solutions_fingerprint(solutions.items())
    made_for = ", ".join(labels.fingerprints) + (f" ({', '.join(labels.sources)})" if labels.sources else "")
    present = [label for label in labels.labels if label.solution_id in solutions]
    if labels.labels and not present:
        raise LabelsError(f"{labels.path}: none of its {len(labels.labels)} labelled solutions is in this input: the "
                          f"labels were made for table {made_for}, this input's {len(solutions)} wrong solutions have "
                          f"fingerprint {here}")
    changed = [label for label in present if label.steps_sha256 != steps_sha256(solutions[label.solution_id])]
    if changed:
        named = ", ".join(f"{label.solution_id!r} ({label.where})" for label in changed[:5])
        raise LabelsError(f"{labels.path}: {len(changed)} labelled solution(s) have other steps in this input than the "
                          f"ones the person read: {named}; the labels were made for table {made_for}, this input has "
                          f"fingerprint {here}")
    for label in present:
        count = len(solutions[label.solution_id])
        if label.step is not None and label.step > count:
            raise LabelsError(f"{label.where}: field 'step' is {label.step} but solution {label.solution_id!r} has "
                              f"{count} steps")
    return {"input_fingerprint": here, "same_table": labels.fingerprints == [here], "labels_here": len(present)}
