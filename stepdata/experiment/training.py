"""Training one arm with one seed: the same budget for every arm, a record when it is done.

Every trainer-based arm calls :func:`trainers.train.train` from the same start
policy with the same optimizer steps, batch, learning rate, schedule, warm-up,
maximum length and LoRA rank; only the pairs, the method (its loss and, unless the
experiment sets one, its beta) and, for sDPO, the stages differ. sDPO spends the
same steps over its stages (steps // stages each). DPO-ST's arm hands the budget to
the self-training loop (:func:`train_dpo_st`).

An arm whose pairs file has nothing it can train on is a recorded outcome
(``no_pairs``), not a crash: the report shows it untrained, and the run goes on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.experiment.arms import Arm
from stepdata.experiment.config import ExperimentConfig
from stepdata.experiment.units import finished, write_record

NO_TRAINABLE = "no trainable pairs"  # the start of the trainers' error for a data set they cannot use


def train_settings(config: ExperimentConfig, arm: Arm, seed: int, policy: dict[str, Any],
                   pairs: dict[str, Any] | None) -> dict[str, Any]:
    """The settings one arm's training depends on (its record's; a change is refused on resume)."""
    return {"arm": arm.name, "method": arm.method, "kinds": list(arm.kinds), "stages": arm.stages, "seed": seed,
            "policy": policy, "pairs": pairs, "steps": config.steps, "batch_size": config.batch_size,
            "learning_rate": config.learning_rate, "lr_scheduler": config.lr_scheduler,
            "warmup_ratio": config.warmup_ratio, "beta": config.beta, "lora_r": config.lora_r,
            "max_length": config.max_length, "keep_unverified": config.keep_unverified,
            **({"dpo_st_options": dict(config.dpo_st_options)} if arm.selftrain else {})}


def trainable(pairs: pd.DataFrame, arm: Arm, keep_unverified: bool) -> tuple[int, int]:
    """(pairs, problems) of ``pairs`` the arm's trainer would take: its kinds, and a chosen side that did not
    fail its check unless unverified pairs are kept (the trainers' own rule)."""
    from stepdata.pairs.filters import chosen_failed_check

    rows = pairs[pairs["kind"].isin(arm.kinds)]
    if not keep_unverified and "chosen_verified" in rows:
        rows = rows[~rows["chosen_verified"].map(chosen_failed_check)]
    return len(rows), int(rows["problem_id"].nunique()) if len(rows) else 0


def _trainer_arm(config: ExperimentConfig, arm: Arm, seed: int, unit: Path, data: Path, policy_path: str,
                 echo: Callable[[str], None]) -> dict[str, Any]:
    from stepdata.io import read_table
    from trainers.train import train

    pairs_path = data / "pairs" / f"{arm.pairs}.parquet"
    pairs = read_table(pairs_path, kind="pairs")
    usable, problems = trainable(pairs, arm, config.keep_unverified)
    if usable == 0 or problems < arm.stages:
        need = "no pair it can train on" if usable == 0 else f"{problems} problem(s) for {arm.stages} stages"
        echo(f"{arm.name} seed {seed}: not trained: {pairs_path.name} has {need}")
        return {"status": "no_pairs", "detail": f"{pairs_path.name}: {len(pairs)} pairs, {usable} trainable, "
                                                f"{problems} problems: {need}"}
    per_stage = max(config.steps // arm.stages, 1)
    model_dir = unit / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a killed training leaves a partial folder; training starts over
    try:
        report = train(arm.method, policy_path, pairs_path, model_dir, stages=arm.stages,
                       rollouts=data / "rollouts.parquet" if arm.stages > 1 else None, lora_r=config.lora_r,
                       max_steps=per_stage, per_device_train_batch_size=config.batch_size,
                       learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
                       warmup_steps=config.warmup_ratio, beta=config.beta, kinds=arm.kinds, seed=seed,
                       max_length=config.max_length, keep_unverified=config.keep_unverified)
    except ValueError as exc:
        if not str(exc).startswith(NO_TRAINABLE):
            raise
        echo(f"{arm.name} seed {seed}: not trained: {exc}")
        return {"status": "no_pairs", "detail": str(exc)}
    return {"status": "trained", "model": str(model_dir), "optimizer_steps": per_stage * arm.stages,
            "pairs_in_file": len(pairs), "pairs_trainable": usable, "train_seconds": report.get("seconds")}


DPO_ST_ITERATIONS = 2
NOT_SHARED = ("lr_scheduler", "warmup_ratio", "lora_r", "max_length", "keep_unverified")  # the loop's own


def dpo_st_config(config: ExperimentConfig, seed: int) -> Any:
    """DPO-ST's self-training config for this experiment: two iterations from the (already warmed-up) start
    policy, each spending steps // 2 optimizer steps of ``batch_size`` on DPO (and as many on its SFT), the
    experiment's learning rate and, when set, beta; then ``dpo_st_options`` by name. Raises ValueError naming an
    option the loop does not have."""
    import dataclasses

    from stepdata.selftrain import SelfTrainConfig
    per_iteration = max(config.steps // DPO_ST_ITERATIONS, 1)
    wanted: dict[str, Any] = {
        "iterations": DPO_ST_ITERATIONS, "warmup": False, "seed": seed, "samples": config.samples,
        "max_tokens": config.max_tokens, "batch_size": config.batch_size, "grad_accum": 1,
        "dpo_learning_rate": config.learning_rate, "dpo_max_steps": per_iteration, "sft_max_steps": per_iteration,
        **({"dpo_beta": config.beta} if config.beta is not None else {}),
    }
    fields = {f.name for f in dataclasses.fields(SelfTrainConfig)}
    unknown = sorted(set(config.dpo_st_options) - fields)
    if unknown:
        raise ValueError(f"dpo_st_options {unknown}: not settings of SelfTrainConfig (it has {sorted(fields)})")
    return SelfTrainConfig(**wanted | dict(config.dpo_st_options))


def train_dpo_st(config: ExperimentConfig, seed: int, unit: Path, data: Path, policy_path: str,
                 echo: Callable[[str], None]) -> dict[str, Any]:
    """DPO-ST's arm: the self-training loop (``stepdata selftrain``) from the start policy on the training problems.

    Its folder is ``unit/selftrain`` (resumable on its own); the arm's model is the loop's final model.
    """
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.io import read_table
    from stepdata.selftrain import run_selftrain as runner

    problems = read_table(data / "problems.parquet", kind="problems")
    engine = EngineConfig(backend=config.backend, engine_options=tuple(config.engine_options))
    manifest = runner(unit / "selftrain", policy_path, problems, dpo_st_config(config, seed), engine=engine,
                      echo=echo)
    iterations = manifest.get("iterations") or []
    steps = [(it.get("dpo") or {}).get("optimizer_steps") for it in iterations]
    return {"status": "trained", "model": str(manifest["final_model"]), "selftrain": "selftrain",
            "dpo_optimizer_steps": steps, "not_shared": list(NOT_SHARED)}


def run_training(config: ExperimentConfig, arm: Arm, seed: int, unit: Path, data: Path, policy: dict[str, Any],
                 policy_path: str, pairs: dict[str, Any] | None, echo: Callable[[str], None]) -> dict[str, Any]:
    """Train ``arm`` with ``seed`` into ``unit`` unless it is finished; returns its record."""
    settings = train_settings(config, arm, seed, policy, pairs)
    record = unit / "train.json"
    done = finished(record, settings)
    if done is not None:
        echo(f"{arm.name} seed {seed}: trained already ({done['result']['status']}), not trained again")
        return done
    echo(f"{arm.name} seed {seed}: training ({arm.title})")
    unit.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if arm.selftrain:
        result = train_dpo_st(config, seed, unit, data, policy_path, echo)
    else:
        result = _trainer_arm(config, arm, seed, unit, data, policy_path, echo)
    result["seconds"] = round(time.monotonic() - started, 1)
    return write_record(record, settings, result)
