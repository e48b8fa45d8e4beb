"""Train/test split of a pairs table by problem.

Pairs of one problem share the question and often the prefix and even the chosen
step, so a split by row would put near copies of test pairs into training and
overstate held-out preference accuracy. Every problem therefore goes wholly to one
side.

The side of a problem is decided by a hash of ``seed`` and its ``problem_id``
alone, not by its position or by the other problems in the table. So the split is
the same on every run and machine, and a problem keeps its side when the table
grows (more pairs, more problems, another stage's output): a test problem never
leaks into training because data was added. The price is that the test share is
``test_fraction`` only on average; the exact counts are reported by the caller.
"""

from __future__ import annotations

import hashlib

import pandas as pd

_SCALE = float(1 << 64)


def problem_score(problem_id: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``problem_id`` (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"stepdata-split:{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_test_problem(problem_id: str, test_fraction: float, seed: int = 0) -> bool:
    """Whether ``problem_id`` falls in the test side."""
    return problem_score(problem_id, seed) < test_fraction


def split_by_problem(df: pd.DataFrame, test_fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(train, test)``: every pair of a problem on the same side, chosen by hash.

    Row order (and the index) within each side is that of ``df``.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    if "problem_id" not in df.columns:
        raise ValueError("pairs table has no problem_id column; cannot split by problem")
    sides = {pid: is_test_problem(pid, test_fraction, seed) for pid in df["problem_id"].unique()}
    mask = df["problem_id"].map(sides).astype(bool)
    return df[~mask], df[mask]
