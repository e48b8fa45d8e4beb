"""sDPO (Kim et al., 2024): train on the pairs in stages, each stage's reference
being the model the previous stage produced.

The pairs are ordered (by default easiest problems first, difficulty being the
policy's accuracy on the problem in the rollouts table) and cut into ``stages``
contiguous parts along problem boundaries, so a problem's pairs all land in one
stage. A stronger reference in later stages gives a tighter lower bound for the
DPO objective, which is the point of the method.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from trainers.config import StepDPOConfig

logger = logging.getLogger(__name__)


def problem_order(pairs: pd.DataFrame, rollouts: pd.DataFrame | None = None) -> list[str]:
    """Problem ids, easiest first.

    With rollouts: by the share of correct rollouts (higher is easier), ties by id.
    Without: by the mean number of prefix steps of the problem's pairs, deepest
    first (a later first error means the policy stayed right for longer, so the
    problem is easier for it), then by id.
    """
    problems = pd.unique(pairs["problem_id"])
    if rollouts is not None and len(rollouts):
        judged = rollouts[rollouts["correct"].notna()]
        accuracy = judged.groupby("problem_id")["correct"].mean()
        missing = [p for p in problems if p not in accuracy.index]
        if missing:
            logger.warning("%d problems have no judged rollouts; they are placed last", len(missing))
        key = {p: (-float(accuracy.get(p, -1.0)), str(p)) for p in problems}
    else:
        depth = pairs.assign(_n=pairs["prefix_steps"].map(lambda s: 0 if s is None else len(s)))
        mean_depth = depth.groupby("problem_id")["_n"].mean()
        key = {p: (-float(mean_depth[p]), str(p)) for p in problems}
    return sorted(problems, key=key.__getitem__)


def split_stages(pairs: pd.DataFrame, stages: int, order: list[str]) -> list[pd.DataFrame]:
    """Cut ``pairs`` into ``stages`` parts of whole problems, following ``order``, sizes as even as possible."""
    if stages < 1:
        raise ValueError("stages must be at least 1")
    problems = list(order)
    if len(problems) < stages:
        raise ValueError(f"{stages} stages need at least {stages} problems; the pairs cover {len(problems)}")
    counts = pairs.groupby("problem_id").size()
    total, parts, current, done = int(counts.sum()), [], [], 0
    for i, problem in enumerate(problems):
        current.append(problem)
        done += int(counts[problem])
        left_problems = len(problems) - i - 1
        left_stages = stages - len(parts) - 1
        if left_stages and (done >= total * (len(parts) + 1) / stages or left_problems == left_stages):
            parts.append(current)
            current = []
    parts.append(current)
    return [pairs[pairs["problem_id"].isin(set(p))].reset_index(drop=True) for p in parts]


def train_staged(
    model: Any,
    tokenizer: Any,
    pairs: pd.DataFrame,
    args: StepDPOConfig,
    stages: int,
    rollouts: pd.DataFrame | None = None,
    peft_config: Any = None,
    on_stage_end: Callable[[int, Any], None] | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train stage by stage; returns the final model and one record per stage.

    Stage ``i`` trains the model left by stage ``i-1`` against a frozen copy of
    that same model (with LoRA: the adapter is merged after each stage, and the
    next stage's reference is the merged model with its new adapter disabled).
    """
    from trainers.report import step_log
    from trainers.step_dpo import StepDPOTrainer

    parts = split_stages(pairs, stages, problem_order(pairs, rollouts))
    records = []
    for i, part in enumerate(parts):
        stage_args = copy.deepcopy(args)
        stage_args.output_dir = str(Path(args.output_dir) / f"stage-{i + 1}")
        ref_model = None
        if peft_config is None:
            ref_model = copy.deepcopy(model).eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
        trainer = StepDPOTrainer(model=model, args=stage_args, train_dataset=part, processing_class=tokenizer,
                                 ref_model=ref_model, peft_config=peft_config, callbacks=callbacks)
        logger.info("sDPO stage %d/%d: %d pairs from %d problems", i + 1, len(parts), len(part),
                    part["problem_id"].nunique())
        output = trainer.train()
        model = trainer.model
        if peft_config is not None:
            model = model.merge_and_unload()
        records.append({"stage": i + 1, "pairs": len(part), "problems": int(part["problem_id"].nunique()),
                        "train_loss": output.training_loss, "data": trainer.data_report.as_dict(),
                        "optimizer_steps": trainer.state.max_steps,
                        "log": step_log(trainer.state.log_history)})
        if on_stage_end is not None:
            on_stage_end(i + 1, trainer)
    return model, records
