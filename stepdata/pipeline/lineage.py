"""What a table was made from, carried from stage to stage, and the check that it still holds.

A rollouts table records the problems it was sampled for, the prompt template and
the model; localize copies that lineage into its table, rectify and synthesize read
it. So ``stepdata rectify localized.parquet --out pairs.parquet`` needs no
``--problems``, ``--template`` or ``--model`` retyped; given anyway, the user's value wins.

Because a template file can change after sampling (or another one can be named), a
stage that continues a rollout re-renders its prompt and compares it with the
``prompt`` stored in the row (:func:`prompt_mismatch`); a row whose prompt no longer
matches is a per-row outcome, never a silent continuation from another prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.generation import GenerationRequest
from stepdata.io import read_metadata, read_table

LINEAGE_KEYS = ("problems", "template", "model")


def problems_reference(source: str, data_dir: str | None = None) -> str:
    """How a lineage names a problems source: an existing file by its absolute path, a data set by its name."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def lineage_of(path: str | os.PathLike) -> dict[str, Any]:
    """The lineage recorded in a stepdata table's metadata.

    Tables written before lineage existed still say what they need: a rollouts table's
    config has its ``template`` and ``model``, and its ``source`` names the problems.
    """
    config = read_metadata(path).get("config") or {}
    lineage = dict(config.get("lineage") or {})
    if not lineage and config.get("stage") == "sample":
        lineage = {"problems": config.get("source"), "template": config.get("template"), "model": config.get("model")}
    return {k: lineage.get(k) for k in LINEAGE_KEYS if lineage.get(k) is not None}


def load_lineage_problems(reference: str | None, data_dir: str | None = None, *, given: str | None = None,
                          needed_by: str = "this stage") -> pd.DataFrame | None:
    """The problems table: ``given`` (the user's --problems) or the lineage's; None when neither exists."""
    from stepdata.loaders import load_problems

    source = given or reference
    if source is None:
        return None
    path = Path(source)
    if path.suffix == ".parquet" and path.exists() and read_metadata(path).get("kind") == "problems":
        return read_table(path, kind="problems")
    try:
        return load_problems(source, data_dir=data_dir)
    except FileNotFoundError as exc:
        if given is None:
            raise FileNotFoundError(f"{needed_by} reads its problems from the input table's lineage ({source}), which "
                                    f"is not there any more: {exc}; give --problems") from None
        raise


def prompt_text(generator: Any, request: GenerationRequest, result: Any = None) -> str:
    """The prompt as a rollouts row stores it: what the engine saw, or the chat as JSON when only a server knows."""
    text = getattr(result, "prompt_text", None) if result is not None else None
    if text is None and hasattr(generator, "render"):
        text = generator.render(request)
    return text if text is not None else json.dumps(list(request.messages or ()), ensure_ascii=False)


def prompt_mismatch(stored: Any, generator: Any, request: GenerationRequest) -> str | None:
    """Why the stored prompt is not what ``request`` renders to now (None: it is).

    Exact equality with the engine's rendering is the rule. A row sampled through
    another backend stores the same chat in another form (a server's chat endpoint
    stores the messages as JSON); it still matches when every message's text appears,
    in order, in the stored prompt. Anything else (another template, an edited
    template file, another question) is a mismatch, described by the first message
    that is not found.
    """
    if not isinstance(stored, str) or not stored:
        return None  # nothing stored to compare (a reference solution, not a rollout)
    if stored == prompt_text(generator, request):
        return None
    position = 0
    for message in request.messages or ():
        content = message["content"]
        found = stored.find(content, position)
        if found < 0:
            preview = content if len(content) <= 80 else content[:77] + "..."
            return (f"the stored prompt does not contain the template's {message['role']} message as rendered "
                    f"now ({preview!r}): the template changed since sampling or is not the one sampled with")
        position = found + len(content)
    return None
