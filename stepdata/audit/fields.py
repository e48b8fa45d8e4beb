"""Tolerant reading of one pairs-table row, for display.

The audit view exists to look at data that may be wrong, so it must never crash
on it: a row may come from ``read_table`` (Python lists, dicts), from a frame
built in memory (numpy arrays, NaN for missing numbers), or be a plain dict that
lacks optional columns. Everything here turns such values into plain Python
values, and ``None`` for "missing", without raising.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from stepdata.steps import step_label


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA/NaT (a null cell, whatever its dtype made of it)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:  # pragma: no cover - pandas is a core dependency
        return False


def text(row: Mapping[str, Any], key: str) -> str | None:
    """The column ``key`` as text, or None when absent or null."""
    value = row.get(key)
    return None if is_missing(value) else str(value)


def as_int(value: Any) -> int | None:
    """An integer cell (pandas turns an int column with nulls into floats), or None."""
    if is_missing(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    """A number cell as a float, or None when null or not a number."""
    if is_missing(value) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_bool(value: Any) -> bool | None:
    """A nullable boolean cell as True/False/None."""
    if is_missing(value):
        return None
    return bool(value)


def as_list(value: Any) -> list[str]:
    """A list-of-strings cell (list, tuple or numpy array) as a list; [] when null.

    A lone string where a list belongs is shown as one item, not split into characters.
    """
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [str(value)]
    if is_missing(value):
        return []
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def as_mapping(value: Any) -> dict[str, Any]:
    """A struct cell (dict) or JSON text as a dict; {} when null or unreadable."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def partial_answer(prompt_messages: Any) -> str:
    """The assistant's partial answer that the prefix steps continue.

    Same rule as the pair builder (the last message, if it is the assistant's),
    but a malformed ``prompt_messages`` gives "" instead of an exception: the
    report must still show the rest of a broken pair.
    """
    if is_missing(prompt_messages) or not prompt_messages:
        return ""
    try:
        messages = json.loads(prompt_messages)
    except (TypeError, json.JSONDecodeError):
        return ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], Mapping):
        last = messages[-1]
        if last.get("role") == "assistant":
            return str(last.get("content") or "")
    return ""


def error_step_label(error_step: Any) -> str:
    """How people see a 0-based error step: "Step k+1", "no error" (-1) or "unknown" (null)."""
    k = as_int(error_step)
    if k is None:
        return "unknown"
    if k < 0:
        return "no error"
    return step_label(k)
