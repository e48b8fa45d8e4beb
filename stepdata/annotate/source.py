"""What a person is asked to annotate: the wrong solutions of a rollouts or localized table.

The solutions are the localize stage's units (a rollouts table's wrong rollouts, or every
row of a localized table: the same set for one run), each with its problem's question and
gold answer when the problems table is found (the table's lineage, or ``--problems``). The
set's fingerprint covers all of them (:func:`~stepdata.annotate.labels.solutions_fingerprint`),
so every page or task file made from one table, whatever part of it shows, has the same one,
and labels from it fit the rollouts table as well as the localized one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.annotate.labels import solutions_fingerprint, steps_sha256
from stepdata.io import read_metadata, read_table
from stepdata.schema import LOCALIZE_STATUSES, ROLLOUTS


@dataclass(frozen=True)
class Item:
    """One wrong solution to annotate, with what a person needs beside its steps."""

    solution_id: str
    problem_id: str
    steps: tuple[str, ...]
    question: str | None = None
    gold: str | None = None
    pred_answer: str | None = None
    prompt: str | None = None  # the exact text sent: shown when the question is not known
    finished: bool = True

    @property
    def steps_sha256(self) -> str:
        return steps_sha256(self.steps)


@dataclass
class AnnotationSet:
    """The items of one source table: ``fingerprint`` covers all its wrong solutions, ``items`` those shown."""

    source: str
    kind: str
    fingerprint: str
    total: int
    items: list[Item]
    left_out: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _cell(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def solution_units(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The wrong solutions of a table, as the localize stage's units: a rollouts table's wrong rollouts, a
    localized table's rows (which are those: its localization's columns dropped, and its ``error``, which is
    the localizer's, cleared; a rollout that failed to sample was never localized)."""
    from stepdata.pipeline.localize import wrong_rollouts

    if kind == "localized":
        return table[list(ROLLOUTS.names)].assign(error=None).reset_index(drop=True)
    return wrong_rollouts(table)[0]


def _read_source(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    kind = read_metadata(path).get("kind")
    if kind not in ("rollouts", "localized"):
        raise ValueError(f"{path}: expected a rollouts or localized table, found {kind or 'a table without stepdata metadata'}")
    return read_table(path, kind=kind), kind


def read_solutions(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """The wrong solutions of a rollouts or localized table (anything else is refused), and its kind."""
    table, kind = _read_source(path)
    return solution_units(table, kind), kind


def load_items(path: str | os.PathLike, problems: pd.DataFrame | None = None, *,
               statuses: Collection[str] = (), limit: int | None = None) -> AnnotationSet:
    """The solutions of ``path`` to annotate: wrong ones, with steps, optionally only those a localizer gave one of
    ``statuses`` (a localized table), at most ``limit``. ``problems`` (indexed or not) fills question and gold."""
    table, kind = _read_source(path)
    if statuses:
        unknown = sorted(set(statuses) - set(LOCALIZE_STATUSES))
        if unknown:
            raise ValueError(f"unknown status(es) {unknown}; expected some of {list(LOCALIZE_STATUSES)}")
        if kind != "localized":
            raise ValueError(f"{path}: choosing solutions by status needs a localized table, this is a {kind} table")
    units = solution_units(table, kind)
    fingerprint = solutions_fingerprint((str(r), list(s or [])) for r, s in zip(units["rollout_id"], units["steps"]))
    chosen = units
    left_out: dict[str, int] = {}
    if statuses:  # a localized table's rows are its units, in order
        keep = table["status"].fillna("unknown").isin(list(statuses)).to_numpy()
        left_out["other_status"] = int((~keep).sum())
        chosen = chosen[keep]
    has_steps = chosen["steps"].map(lambda s: s is not None and len(s) > 0)
    if (~has_steps).any():
        left_out["no_steps"] = int((~has_steps).sum())
    chosen = chosen[has_steps]
    if limit is not None and len(chosen) > limit:
        left_out["over_limit"] = len(chosen) - limit
        chosen = chosen.head(limit)
    index = None
    if problems is not None:
        index = problems if problems.index.name == "problem_id" else problems.drop_duplicates("problem_id").set_index("problem_id")
    items, unknown_problems = [], 0
    for row in chosen.to_dict("records"):
        problem = index.loc[row["problem_id"]] if index is not None and row["problem_id"] in index.index else None
        unknown_problems += index is not None and problem is None
        items.append(Item(str(row["rollout_id"]), str(row["problem_id"]), tuple(row["steps"]),
                          question=_cell(problem["question"]) if problem is not None else None,
                          gold=_cell(problem["answer"]) if problem is not None else None,
                          pred_answer=_cell(row.get("pred_answer")), prompt=_cell(row.get("prompt")),
                          finished=_cell(row.get("finish_reason")) != "length"))
    notes = []
    if problems is None:
        notes.append("no problems table was found, so questions and gold answers are not shown: the prompt each "
                     "solution was sampled with is shown instead (give --problems)")
    elif unknown_problems:
        notes.append(f"{unknown_problems} solution(s) have a problem_id the problems table lacks: their prompt is shown")
    return AnnotationSet(str(Path(path)), kind, fingerprint, len(units), items, left_out, notes)
