"""``KEY=VALUE`` items from the command line and recipes, parsed in one place.

``--engine-option dtype=float32``, ``--column question=prompt`` and a recipe's
``engine_options`` all arrive as ``KEY=VALUE`` strings; one parser means one error
message and one rule for values (JSON where they parse, so ``max_model_len=2048``
is an int and ``enforce_eager=true`` a bool; the raw string otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


class KeyValueError(ValueError):
    """An item that is not ``KEY=VALUE``; the message names the item and the option it came from."""


def parse_key_values(items: Iterable[str], *, option: str = "KEY=VALUE", json_values: bool = True) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a later key wins; raises KeyValueError naming ``option``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise KeyValueError(f"{option}: {item!r} is not KEY=VALUE")
        if json_values:
            try:
                parsed[key.strip()] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        parsed[key.strip()] = value
    return parsed
