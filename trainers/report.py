"""What ``train_report.json`` says about a run: the settings it resolved and every optimizer step.

A report that only names the method and the data cannot tell two runs apart: the
learning rate, beta and batch size a run actually used (the method's defaults,
then the user's options) are written out, with the number of optimizer steps and
warm-up steps they came to. The log holds one entry per optimizer step (loss,
learning rate, gradient norm and, for the DPO methods, TRL's ``rewards/margins``
and ``rewards/accuracies``), so even a two-step run has one; TRL's own interval
(10 steps) left it empty below that.

While training, :class:`StepLines` prints a throttled line per logged step on
stderr (step, loss, margin, accuracy, ETA) in place of transformers' printed dicts.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from transformers import TrainerCallback

from stepdata.generation.progress import EtaEstimator

_COMMON = ("learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
           "gradient_accumulation_steps", "num_train_epochs", "max_steps", "max_length", "seed", "bf16",
           "gradient_checkpointing", "logging_steps")
_PREFERENCE = ("beta", "loss_type", "kinds", "eos_policy", "boundary", "keep_unverified")
_SFT = ("template", "completion_only_loss")


def hyperparameters(method: str, args: Any, *, lora_r: int | None = None, stages: int = 1,
                    optimizer_steps: int | None = None) -> dict[str, Any]:
    """The settings a run resolved: the config's values after defaults and overrides.

    ``max_steps`` None means "run ``num_train_epochs``"; ``optimizer_steps`` (known once
    the trainer has seen the data) is what either came to, ``warmup_optimizer_steps``
    the warm-up it implies and ``effective_batch_size`` the pairs (or problems) per
    optimizer step over all devices.
    """
    names = _COMMON + (_SFT if method == "sft" else _PREFERENCE)
    values: dict[str, Any] = {"method": method}
    for name in names:
        if hasattr(args, name):
            value = getattr(args, name)
            values[name] = list(value) if isinstance(value, tuple) else value
    if values.get("max_steps", -1) is not None and values.get("max_steps", -1) < 0:
        values["max_steps"] = None
    values["lr_scheduler_type"] = str(getattr(values.get("lr_scheduler_type"), "value", values.get("lr_scheduler_type")))
    values["effective_batch_size"] = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                      * max(getattr(args, "world_size", 1), 1))
    values["lora_r"] = lora_r
    values["stages"] = stages
    if optimizer_steps is not None:
        values["optimizer_steps"] = optimizer_steps
        values["warmup_optimizer_steps"] = args.get_warmup_steps(optimizer_steps)
    return values


def step_log(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step training entries of a trainer's ``state.log_history`` (not the end-of-run summary)."""
    return [dict(entry) for entry in log_history if "loss" in entry and "train_loss" not in entry]


def _number(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


class StepLines(TrainerCallback):
    """A line on stderr per logged optimizer step, at most every ``every`` seconds (and the last step)."""

    def __init__(self, label: str, every: float = 5.0, stream: TextIO | None = None) -> None:
        self.label, self.every = label, every
        self.stream = stream or sys.stderr
        self._eta: EtaEstimator | None = None
        self._step = 0
        self._last: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._eta = EtaEstimator(state.max_steps, baseline="start")
        self._step = 0
        self._last = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs or self._eta is None:
            return
        self._eta.update(state.global_step - self._step)
        self._step = state.global_step
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every and state.global_step < state.max_steps:
            return
        self._last = now
        parts = [f"{self.label}: step {state.global_step}/{state.max_steps}", f"loss {_number(logs.get('loss'), '.4f')}"]
        if "rewards/margins" in logs:
            parts += [f"margin {_number(logs.get('rewards/margins'), '.4f')}",
                      f"accuracy {_number(logs.get('rewards/accuracies'), '.2f')}"]
        parts += [f"lr {_number(logs.get('learning_rate'), '.2e')}", self._eta.describe()]
        print(", ".join(parts), file=self.stream, flush=True)
