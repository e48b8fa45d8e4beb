"""The experiment's one data build, shared by every arm: our stages, run as a recipe, then a pairs file per arm.

The build is the quickstart's pipeline (sample -> localize (exact) -> rectify ->
synthesize, with whole-solution DPO pairs) on the experiment's training problems
from the start policy, run through :func:`stepdata.recipe.run_recipe`, so every
stage resumes batch by batch and refuses a changed config as it does anywhere.
From the combined pairs it writes what each arm trains on (``pairs/<name>.parquet``):
every arm's pairs come from the same problems and the same rollouts, only the kind
differs, and the out-of-distribution arm's are the Step-DPO pairs with the gold
step as chosen (:mod:`stepdata.pairs.gold_steps`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.experiment.config import ExperimentConfig
from stepdata.experiment.units import (
    changed,
    finished,
    model_fingerprint,
    read_record,
    write_record,
)

PAIR_FILES = {  # pairs file -> the kinds it holds (gold: built from the step-dpo pairs)
    "dpo": ("dpo",),
    "stepdpo": ("step-dpo",),
    "scdpo": ("scdpo",),
    "stepdpo_scdpo": ("step-dpo", "scdpo"),
    "stepdpo_ood": ("step-dpo",),
}


def start_model_id(config: ExperimentConfig) -> dict[str, Any]:
    """What identifies the start policy: its folder and a fingerprint of it, or the name `stepdata model fetch`
    builds it from."""
    from stepdata.models import MODELS

    if config.model in MODELS and not Path(config.model).exists():
        return {"model": config.model}
    return {"model": str(config.model), "model_fingerprint": model_fingerprint(config.model)}


def data_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The settings the data build depends on (a change to any is refused once the build has started)."""
    names = ("backend", "engine_options", "seed", "sft_steps", "sft_problems", "sft_learning_rate", "min_steps",
             "max_steps", "problems", "samples", "rectify_samples", "rectify_per_problem", "synth_rounds",
             "synth_cuts", "max_tokens")
    values = config.record()
    return start_model_id(config) | {name: values[name] for name in names}


def data_changes(config: ExperimentConfig, folder: Path) -> list[str]:
    """Why the data build in ``folder`` (finished or started) cannot go on with ``config``."""
    settings = data_settings(config)
    return [reason for reason in (changed(folder / "build.json", settings, "the data build"),
                                  changed(folder / "started.json", settings, "the data build (started)")) if reason]


def recipe_steps(config: ExperimentConfig) -> list[dict[str, Any]]:
    """The build as recipe steps (what `stepdata run` would run): problems, policy, the four stages, combine."""
    seed = config.seed
    steps: list[dict[str, Any]] = [
        {"do": "make-problems", "name": "problems", "out": "problems.parquet", "n": config.problems, "seed": seed + 2,
         "min_steps": config.min_steps, "max_steps": config.max_steps},
        {"do": "model", "name": "base_model", "model": config.model},
    ]
    policy = "@base_model"
    if config.sft_steps:
        steps += [
            {"do": "make-problems", "name": "sft_problems", "out": "sft_problems.parquet", "n": config.sft_problems,
             "seed": seed + 1, "min_steps": config.min_steps, "max_steps": config.max_steps},
            {"do": "train", "name": "sft", "method": "sft", "model": "@base_model", "data": "@sft_problems",
             "out": "model-sft", "max_steps": config.sft_steps, "per_device_train_batch_size": 8,
             "learning_rate": config.sft_learning_rate, "seed": seed},
        ]
        policy = "@sft"
    steps += [
        {"do": "sample", "input": "@problems", "model": policy, "out": "rollouts.parquet", "run": {"batch_size": 16},
         "config": {"n": config.samples, "max_tokens": config.max_tokens, "seed": seed}},
        {"do": "localize", "input": "@sample", "out": "localized.parquet", "config": {"method": "exact"}},
        {"do": "rectify", "input": "@localize", "out": "pairs_stepdpo.parquet", "run": {"batch_size": 32},
         "config": {"n": config.rectify_samples, "max_tokens": config.max_tokens, "seed": seed,
                    "max_rollouts_per_problem": config.rectify_per_problem}},
        {"do": "synthesize", "input": "@sample", "out": "pairs_scdpo.parquet", "run": {"batch_size": 32},
         "config": {"rounds": config.synth_rounds, "cuts": config.synth_cuts, "seed": seed, "dpo_pairs": True,
                    "max_pairs_per_problem": 2, "max_solutions_per_problem": 2}},
        {"do": "combine", "name": "pairs", "inputs": ["@rectify", "@synthesize"], "out": "pairs.parquet"},
    ]
    return steps


def write_arm_pairs(pairs: pd.DataFrame, problems: pd.DataFrame, folder: Path) -> dict[str, dict[str, Any]]:
    """``folder/<name>.parquet`` for every entry of :data:`PAIR_FILES`; returns each file's counts."""
    from stepdata.io import write_table
    from stepdata.pairs.gold_steps import gold_step_pairs, skip_counts
    from stepdata.pairs.stats import chosen_confirmed, problem_count
    from stepdata.pipeline.run import table_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, dict[str, Any]] = {}
    for name, kinds in PAIR_FILES.items():
        chosen = pairs[pairs["kind"].isin(kinds)].reset_index(drop=True)
        extra: dict[str, Any] = {}
        if name == "stepdpo_ood":
            chosen, skipped = gold_step_pairs(chosen, problems)
            extra = {"gold_skipped": skip_counts(skipped)}
            skipped.to_csv(folder / f"{name}.skipped.csv", index=False)
        write_table(chosen, folder / f"{name}.parquet", "pairs", config={"experiment_pairs": name,
                                                                         "kinds": list(kinds)})
        made[name] = {"pairs": len(chosen), "problems": problem_count(chosen) if len(chosen) else 0,
                      "chosen_confirmed": chosen_confirmed(chosen), **extra, **table_fingerprint(chosen)}
    return made


def build_data(config: ExperimentConfig, folder: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run (or resume) the data build into ``folder``; returns its record's result (counts, paths, seconds)."""
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.io import read_table
    from stepdata.recipe import Recipe, run_recipe

    settings = data_settings(config)
    done = finished(folder / "build.json", settings)
    if done is not None:
        echo(f"data build: finished ({done['result']['pairs_total']} pairs), not run again")
        return done["result"]
    folder.mkdir(parents=True, exist_ok=True)
    if read_record(folder / "started.json") is None:
        write_record(folder / "started.json", settings, {})
    started = time.monotonic()
    engine = EngineConfig(backend=config.backend, engine_options=tuple(config.engine_options))
    recipe = Recipe(vars=config.record(), out=folder, engine=engine, steps=recipe_steps(config), summary="stages.json")
    summary = run_recipe(recipe, echo=echo)
    pairs = read_table(folder / "pairs.parquet", kind="pairs")
    problems = read_table(folder / "problems.parquet", kind="problems")
    arm_pairs = write_arm_pairs(pairs, problems, folder / "pairs")
    result = {
        "policy": str(folder / "model-sft") if config.sft_steps else _base_model_path(config),
        "pairs_total": len(pairs),
        "pairs_by_kind": {str(k): int(v) for k, v in pairs["kind"].value_counts().items()},
        "arm_pairs": arm_pairs,
        "rollouts": summary.get("sample", {}).get("labels"),
        "stages": {name: summary.get(name) for name in ("sample", "localize", "rectify", "synthesize")},
        "stage_seconds": summary.get("seconds", {}),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_record(folder / "build.json", settings, result)
    return result


def _base_model_path(config: ExperimentConfig) -> str:
    from stepdata.models import MODELS, fetch_model

    if config.model in MODELS and not Path(config.model).exists():
        return str(fetch_model(config.model))
    return str(config.model)
