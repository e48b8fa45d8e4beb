"""Which table a DataFrame is, so one ``show(df)`` and one ``stepdata audit`` serve pairs, rollouts and localized.

A table read with :func:`stepdata.read_table` carries its kind in
``df.attrs["stepdata"]["kind"]`` (the Parquet file's metadata; pandas keeps
``attrs`` through head, slicing and boolean filters). A frame made another way
(``pd.read_parquet``, a concat, a dict) has no such record: its kind is then
guessed from its columns, and the view says it guessed, so a surprising page is
explained by its first line.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

AUDITED_KINDS = ("pairs", "localized", "rollouts")

# The columns without which a row of each kind cannot be shown (the others are shown as missing).
REQUIRED: dict[str, tuple[str, ...]] = {
    "pairs": ("pair_id", "question", "chosen", "rejected"),
    "localized": ("rollout_id", "problem_id", "steps", "error_step"),
    "rollouts": ("rollout_id", "problem_id", "steps"),
}


@dataclass(frozen=True)
class TableKind:
    """A table's kind and where it came from: "metadata", "columns" (a guess) or "given" (the caller said)."""

    kind: str
    source: str

    @property
    def note(self) -> str:
        """One line for a view when the kind was guessed, else ""."""
        if self.source != "columns":
            return ""
        return (f"This frame carries no stepdata metadata (df.attrs['stepdata']); it is shown as a {self.kind} table "
                "because of its columns. Read tables with stepdata.read_table to keep their kind, or pass kind=.")


def kind_from_columns(columns: Collection[str]) -> str | None:
    """The audited kind whose columns are all there (localized before rollouts: it is a rollout plus more)."""
    present = set(columns)
    for kind in AUDITED_KINDS:
        if set(REQUIRED[kind]) <= present:
            return kind
    return None


def table_kind(df: pd.DataFrame, kind: str | None = None) -> TableKind:
    """The kind of ``df`` (see the module doc); refuses a table no audit view shows, naming what it found."""
    if kind is not None:
        if kind not in AUDITED_KINDS:
            raise ValueError(f"cannot audit a {kind} table; the audit views show {list(AUDITED_KINDS)}")
        found = TableKind(kind, "given")
    else:
        recorded = (df.attrs.get("stepdata") or {}).get("kind") if isinstance(df.attrs.get("stepdata"), Mapping) \
            else None
        if recorded is not None:
            if recorded not in AUDITED_KINDS:
                raise ValueError(f"cannot audit a {recorded} table (its metadata says so); the audit views show "
                                 f"{list(AUDITED_KINDS)}")
            found = TableKind(recorded, "metadata")
        else:
            guessed = kind_from_columns(df.columns)
            # none fits: name what the closest kind misses (a pairs frame that lost a column says which)
            found = TableKind(guessed or _closest(df.columns), "columns")
    missing = [c for c in REQUIRED[found.kind] if c not in df.columns]
    if missing:
        raise ValueError(f"not a {found.kind} table: missing column(s) {missing}; columns are {list(df.columns)}")
    return found


def row_kind(row: Mapping[str, Any]) -> str:
    """The kind of one row (a pair, a localized rollout or a rollout), from its fields."""
    guessed = kind_from_columns(row.keys())
    if guessed is None:
        closest = _closest(row.keys())
        missing = [c for c in REQUIRED[closest] if c not in row]
        raise ValueError(f"not a pair or a rollout: missing field(s) {missing} of a {closest} row; "
                         f"fields are {list(row.keys())}")
    return guessed


def _closest(columns: Collection[str]) -> str:
    """The audited kind with the largest share of its required columns present (ties: pairs first)."""
    present = set(columns)
    return max(AUDITED_KINDS, key=lambda k: len(present & set(REQUIRED[k])) / len(REQUIRED[k]))
