"""Shared fixtures: where the third-party evaluation data lives (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STEPDATA_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The evaluation data folder beside the checkout (GSM8K, MATH-500, ProcessBench, ...)."""
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"evaluation data not found at {SHARED_DATA} (set STEPDATA_TEST_DATA)")
    return SHARED_DATA
