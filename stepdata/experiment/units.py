"""Resuming an experiment: each unit of work (the data build, one arm's training, one evaluation) is a record.

A unit is finished when its record file exists; the record is written last and
atomically, after everything the unit makes, so a kill at any moment leaves either
no record (the unit runs again from its start) or a finished unit (never run
again). A record holds the settings the unit was made with, only those that
matter to it (an evaluation's: the model's unit, the set, the sampling), so adding
an arm, a seed or an evaluation set to a finished run only adds units; changing a
setting a finished unit was made with is refused before any work starts, naming
the setting, with the same wording as a stage's refusal (``config_diff``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepdata.io import write_text_atomic
from stepdata.pipeline.run import ConfigChanged, config_diff


def plain(value: Any) -> Any:
    """Settings as JSON stores them (tuples as lists), so a record read back compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_record(path: Path) -> dict[str, Any] | None:
    """A unit's record, or None when it is not finished (no file, or one that does not read)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "settings" in record else None


def changed(path: Path, settings: Mapping[str, Any], what: str) -> str | None:
    """Why the finished unit at ``path`` cannot be reused with ``settings`` (None: unfinished, or the same)."""
    record = read_record(path)
    if record is None:
        return None
    diff = config_diff(record["settings"], plain(dict(settings)))
    if not diff:
        return None
    return f"{what} ({path}) was made with other settings: {'; '.join(diff)}"


def refuse_changes(reasons: list[str]) -> None:
    """Raise :class:`ConfigChanged` listing every finished unit a changed setting would make stale."""
    if reasons:
        shown = "\n  ".join(reasons[:8]) + (f"\n  ... and {len(reasons) - 8} more" if len(reasons) > 8 else "")
        raise ConfigChanged(f"this output folder holds finished work made with other settings:\n  {shown}\n"
                            "Run with the settings it was made with, or give another --out.")


def finished(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of a unit finished with exactly ``settings`` (None when it must run)."""
    record = read_record(path)
    if record is None or config_diff(record["settings"], plain(dict(settings))):
        return None
    return record


def write_record(path: Path, settings: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """Mark a unit finished: its settings and result, written atomically (the last thing a unit does)."""
    record = {"settings": plain(dict(settings)), "result": plain(dict(result))}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def model_fingerprint(folder: str | Path) -> str:
    """A quick fingerprint of a model folder: its config, its tokenizer and the sizes, heads and tails of its
    weight files (reading a whole checkpoint at every start would cost more than the check is worth)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            if path.suffix in (".json", ".jinja", ".txt", ".model") or size <= 2 << 20:
                digest.update(handle.read())
            else:
                digest.update(handle.read(1 << 20))
                handle.seek(size - (1 << 20))
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def seed_from(source: Path, out: Path) -> list[str]:
    """Start ``out`` with another experiment's data build and start-policy evaluations (copies of
    ``source/data`` and ``source/eval/start-*``), so a variant (another learning rate or beta, a remedy tried
    once) trains its arms on the very same pairs without building them again. Nothing is copied into an
    ``out`` that already has a data build. The copies are ordinary finished units: a setting they depend on
    that differs in the variant is refused before any work, naming it. Returns what was copied."""
    import shutil

    if not (source / "data" / "build.json").is_file():
        raise FileNotFoundError(f"{source} holds no finished data build ({source / 'data' / 'build.json'} is missing)")
    if (out / "data").exists():
        return []
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "data", out / "data", symlinks=True)
    copied = [str(out / "data")]
    for record in sorted((source / "eval").glob("start-*")):
        (out / "eval").mkdir(exist_ok=True)
        target = out / "eval" / record.name
        (shutil.copytree if record.is_dir() else shutil.copy2)(record, target)
        copied.append(str(target))
    return copied
