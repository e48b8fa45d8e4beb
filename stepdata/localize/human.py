"""The ``human`` localizer: first errors as people marked them (``--method human --labels FILE``).

It asks no model; it reads a labels file (the annotation page's JSON lines or Label
Studio's export: :mod:`stepdata.annotate.labels`) once, when it is built, and answers each
solution from its label:

- ``step`` k (counted from 1, as shown) -> ``error`` at error_step k-1;
- ``no_error`` -> ``no_error`` (-1), or ``unfinished`` in a solution cut at max_tokens (its
  missing steps were never read), as for every other method;
- ``cant_tell`` -> ``unknown``;
- no label -> ``unknown``, with a note saying so (the row is kept, never dropped).

The evidence (the localized table's ``rationale``, as JSON) records the label, the step as
shown, the annotator, the time, the corrected step and where the label was read
(:func:`human_evidence` reads it back). Before any batch, the localize stage hands it all
of its input (:meth:`HumanLocalizer.check_input`): labels made for other text (another
table, a re-sampled rollout with the same id) are refused there, naming the mismatch; and
its summary gets :meth:`HumanLocalizer.report`, which counts labels for solutions that are
not in the input and names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from stepdata.annotate.labels import (
    LabelsError,
    LabelSet,
    check_labels_fit,
    read_labels,
    steps_sha256,
)
from stepdata.localize.base import (
    Localization,
    Solution,
    register_localizer,
    status_for,
)


class HumanLocalizer:
    """Answers from people's labels (module doc)."""

    name = "human"

    def __init__(self, labels: LabelSet) -> None:
        self.labels = labels
        self.fit: dict[str, Any] = {}

    def check_input(self, solutions: Sequence[Solution]) -> None:
        """Refuse labels made for other text than ``solutions`` (the stage's whole input), before any work."""
        self.fit = check_labels_fit(self.labels, {s.solution_id: list(s.steps) for s in solutions})

    def _answer(self, solution: Solution) -> Localization:
        label = self.labels.by_solution.get(solution.solution_id)
        if label is None:
            return Localization(None, "unknown", method=self.name, evidence={"label": None},
                                note=f"no label for this solution in {self.labels.path}")
        if label.steps_sha256 != steps_sha256(solution.steps):  # check_input refuses this for the stage
            raise LabelsError(f"{label.where}: solution {solution.solution_id!r} has other steps than the ones "
                              "the person read")
        evidence = {"label": label.label, "step": label.step, "annotator": label.annotator, "time": label.time,
                    "corrected_step": label.corrected_step, "labels": label.where}
        if label.label == "step":
            if label.step > len(solution.steps):
                raise LabelsError(f"{label.where}: field 'step' is {label.step} but solution "
                                  f"{solution.solution_id!r} has {len(solution.steps)} steps")
            return Localization(label.error_step, "error", method=self.name, evidence=evidence)
        error_step, status = status_for(-1 if label.label == "no_error" else None, solution.finished)
        return Localization(error_step, status, method=self.name, evidence=evidence)

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        return [self._answer(solution) for solution in solutions]

    def report(self, localized: pd.DataFrame) -> dict[str, Any]:
        """What became of the labels in the localized table: used, and for solutions not in it (counted and named)."""
        here = set(localized["rollout_id"].astype(str)) if "rollout_id" in localized.columns else set()
        missing = [label.solution_id for label in self.labels.labels if label.solution_id not in here]
        by_label: dict[str, int] = {}
        annotators: dict[str, int] = {}
        for label in self.labels.labels:
            by_label[label.label] = by_label.get(label.label, 0) + 1
            annotators[label.annotator or "unnamed"] = annotators.get(label.annotator or "unnamed", 0) + 1
        return {
            "file": self.labels.path, "format": self.labels.format, "labels": len(self.labels.labels),
            "used": len(self.labels.labels) - len(missing), "not_in_table": len(missing), "not_in_table_ids": missing,
            "by_label": by_label, "annotators": annotators,
            "corrected_steps": sum(label.corrected_step is not None for label in self.labels.labels),
            "table_fingerprints": self.labels.fingerprints, **self.fit,
            **({"skipped": self.labels.skipped} if self.labels.skipped else {}),
        }


@register_localizer("human")
def make_human(labels: str | None, labels_format: str = "auto") -> HumanLocalizer:
    """The "human" localizer over the labels file ``labels`` (``labels_format``: auto, jsonl or label-studio)."""
    if not labels:
        raise ValueError("the human localizer needs the people's labels: --labels FILE (saved by the page of "
                         "`stepdata annotate`, or Label Studio's JSON export)")
    return HumanLocalizer(read_labels(labels, labels_format))


def human_evidence(rationale: Any) -> dict[str, Any] | None:
    """The evidence of a row the human localizer answered from a label (None: another method, or no label)."""
    if not isinstance(rationale, str) or not rationale.startswith("{"):
        return None
    try:
        evidence = json.loads(rationale)
    except ValueError:
        return None
    return evidence if isinstance(evidence, dict) and evidence.get("label") is not None else None
