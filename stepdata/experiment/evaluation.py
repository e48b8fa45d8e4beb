"""Evaluating every model (the start policy and each trained arm) on the same held-out sets.

One engine per model serves all of its sets; it is built only when one of them is
unfinished, so a resumed run loads no model it does not need. Each (model, set) is a
unit: greedy rows in ``eval/<model>-<set>.parquet`` and, on the sets that get maj@k,
``k`` sampled answers per problem in ``eval/<model>-<set>.maj.parquet``, then the
record ``eval/<model>-<set>.json``. Scoring is :func:`stepdata.evaluate.evaluate_model`'s
(stage 1's prompt, answer extraction and check); every model sees the same problems,
seeds and sampling, so the per-problem results pair up across arms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.experiment.config import MAJ_TOP_P_BEFORE, ExperimentConfig
from stepdata.experiment.units import finished, write_record


def eval_settings(config: ExperimentConfig, model_id: str, model_key: dict[str, Any], set_name: str,
                  problems: dict[str, Any]) -> dict[str, Any]:
    """What one evaluation depends on: the model (its unit's settings), the set's problems and the sampling."""
    maj = config.maj_k if set_name in config.maj_sets and config.maj_k > 1 else 1
    return {"model_id": model_id, "model": model_key, "set": set_name, "problems": problems,
            "max_tokens": config.eval_max_tokens, "maj_k": maj,
            "maj_temperature": config.maj_temperature if maj > 1 else None, "backend": config.backend,
            "engine_options": list(config.engine_options), "template": "step_by_step",
            # named only when it differs from the value every earlier record was made with, so those still resume
            **({"maj_top_p": config.maj_top_p} if maj > 1 and config.maj_top_p != MAJ_TOP_P_BEFORE else {})}


def unit_name(model_id: str, set_name: str) -> str:
    return f"{model_id}-{set_name}"


def evaluate_model_sets(config: ExperimentConfig, model_id: str, model_path: str, model_key: dict[str, Any],
                        sets: dict[str, tuple[Path, dict[str, Any]]], folder: Path,
                        echo: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every set of ``sets`` (name -> (problems table, its fingerprint)) for one model; returns the records."""
    from stepdata.evaluate import evaluate_model
    from stepdata.generation import SamplingConfig
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.io import read_table

    records: dict[str, dict[str, Any]] = {}
    todo = []
    for name, (path, fingerprint) in sets.items():
        settings = eval_settings(config, model_id, model_key, name, fingerprint)
        done = finished(folder / f"{unit_name(model_id, name)}.json", settings)
        if done is not None:
            records[name] = done
        else:
            todo.append((name, path, settings))
    if not todo:
        echo(f"eval {model_id}: every set finished already")
        return records
    folder.mkdir(parents=True, exist_ok=True)
    loading = time.monotonic()
    engine = EngineConfig(backend=config.backend, model=model_path,
                          engine_options=tuple(config.engine_options)).build()
    load_seconds = round(time.monotonic() - loading, 1)  # counted in the first set's record
    try:
        for index, (name, path, settings) in enumerate(todo):
            started = time.monotonic()
            problems = read_table(path, kind="problems")
            greedy = evaluate_model(engine, problems, data=name, sampling=SamplingConfig(
                n=1, temperature=0.0, max_tokens=config.eval_max_tokens, seed=0))
            result: dict[str, Any] = {"greedy": _summary(greedy), "rows": f"{unit_name(model_id, name)}.parquet"}
            _write_rows(greedy.rows, folder / result["rows"])
            if settings["maj_k"] > 1:
                sampled = evaluate_model(engine, problems, data=name, sampling=SamplingConfig(
                    n=settings["maj_k"], temperature=config.maj_temperature, top_p=config.maj_top_p,
                    max_tokens=config.eval_max_tokens, seed=0))
                result["maj"] = _summary(sampled)
                result["maj_rows"] = f"{unit_name(model_id, name)}.maj.parquet"
                _write_rows(sampled.rows, folder / result["maj_rows"])
            result["seconds"] = round(time.monotonic() - started + (load_seconds if index == 0 else 0), 1)
            result["engine_load_seconds"] = load_seconds if index == 0 else 0.0
            records[name] = write_record(folder / f"{unit_name(model_id, name)}.json", settings, result)
            maj = f", maj@{settings['maj_k']} {result['maj']['maj_at_n']:.1%}" if "maj" in result else ""
            echo(f"eval {model_id} on {name}: greedy {greedy.accuracy:.1%} of {greedy.problems}{maj} "
                 f"({result['seconds']:.0f}s)")
    finally:
        engine.close()
    return records


def _summary(result: Any) -> dict[str, Any]:
    keep = ("accuracy", "accuracy_judged", "problems", "samples", "correct", "errors", "truncated", "pass_at_k",
            "maj_at_n", "completion_tokens", "generate_seconds", "backend", "sampling")
    return {k: v for k, v in result.as_dict().items() if k in keep}


def _write_rows(rows: pd.DataFrame, path: Path) -> None:
    from stepdata.io import atomic_path
    from stepdata.secrets import scrub_failed_rows

    with atomic_path(path) as tmp:
        scrub_failed_rows(rows).to_parquet(tmp, index=False)
