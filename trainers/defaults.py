"""Each training method's defaults, in the one place both the configs and ``stepdata train --help`` read.

The config classes (:mod:`trainers.config`, :mod:`trainers.sft`) take their field
defaults from here, and the command's option help is written from the same values,
so the help cannot drift from what a run uses. This module imports nothing heavy:
``stepdata --help`` must not wait for TRL.

Where the values come from:

- Step-DPO (Lai et al., 2024): beta 0.4-0.5 (we use 0.4), learning rate 5e-7, cosine
  schedule, warm-up 10% of the steps.
- SCDPO (Lu et al., 2024): beta 0.1, learning rate 1e-7.
- DPO baseline: beta 0.1 and Step-DPO's learning rate and schedule, so a comparison
  changes the data, not the optimizer.
- SFT warm-up: one cosine epoch at 2e-4 (a short format lesson for a small model).
- Batch size 8, no gradient accumulation, 1024 tokens, 3 epochs for the preference
  methods: TRL's own defaults, stated here so the help and the report can name them.
"""

from __future__ import annotations

from typing import Any

METHODS = ("sft", "stepdpo", "scdpo", "dpo")

_COMMON: dict[str, Any] = {
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,  # below 1: a share of all optimizer steps
}
_PREFERENCE: dict[str, Any] = _COMMON | {"num_train_epochs": 3.0, "eos_policy": "auto", "boundary": "fix"}

DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": _COMMON | {"learning_rate": 2e-4, "num_train_epochs": 1.0, "template": "step_by_step"},
    "stepdpo": _PREFERENCE | {"learning_rate": 5e-7, "beta": 0.4, "kinds": ("step-dpo",)},
    "scdpo": _PREFERENCE | {"learning_rate": 1e-7, "beta": 0.1, "kinds": ("scdpo",)},
    "dpo": _PREFERENCE | {"learning_rate": 5e-7, "beta": 0.1, "kinds": ("dpo",)},
}

# What `stepdata train` adds for every method: a fixed seed (TRL's is 42), a log entry for every
# optimizer step (so train_report.json has one even for --max-steps 2), no checkpoints.
RUN_DEFAULTS: dict[str, Any] = {"seed": 0, "logging_steps": 1, "save_strategy": "no"}


def default(method: str, name: str) -> Any:
    """The default of setting ``name`` for ``method`` (KeyError when the method has no such setting)."""
    return (DEFAULTS[method] | RUN_DEFAULTS)[name]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    if isinstance(value, float) and 0 < abs(value) < 1e-2:  # learning rates as people write them: 5e-7
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def defaults_help(name: str) -> str:
    """``"default: stepdpo 5e-7, scdpo 1e-7, dpo 5e-7, sft 2e-4"`` for option help (one value if all agree)."""
    values = {m: _show(default(m, name)) for m in ("stepdpo", "scdpo", "dpo", "sft") if name in DEFAULTS[m] | RUN_DEFAULTS}
    if len(set(values.values())) == 1:
        return f"default: {next(iter(values.values()))}"
    return "default: " + ", ".join(f"{m} {v}" for m, v in values.items())
