"""Configs for the preference trainers: TRL's ``DPOConfig`` with each paper's defaults.

Trainer+Config pairs as in TRL: every TRL/transformers option still works
(``StepDPOConfig(output_dir=..., per_device_train_batch_size=...)``); we only
change defaults and add the options of our data step. The default values, and
where they come from, are in :mod:`trainers.defaults` (which ``stepdata train
--help`` reads too).

Gradient checkpointing is off by default (TRL turns it on): the models this
toolkit is used with on CPU and in tests are small, and recomputation costs a
third of the step time; turn it on for large models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from trainers.data import BoundaryPolicy, EosPolicy
from trainers.defaults import DEFAULTS

_STEP, _SC, _DPO = DEFAULTS["stepdpo"], DEFAULTS["scdpo"], DEFAULTS["dpo"]


@dataclass
class StepDPOConfig(DPOConfig):
    """Step-DPO: prompt = chat template + correct prefix; chosen/rejected = step k only."""

    beta: float = field(default=_STEP["beta"], metadata={"help": "DPO temperature; Step-DPO used 0.4-0.5."})
    learning_rate: float = field(default=_STEP["learning_rate"], metadata={"help": "Step-DPO used 5e-7."})
    lr_scheduler_type: str = field(default=_STEP["lr_scheduler_type"],
                                   metadata={"help": "Step-DPO used a cosine schedule."})
    warmup_steps: float = field(default=_STEP["warmup_steps"], metadata={"help": "A float below 1 is a share of all steps."})
    per_device_train_batch_size: int = field(default=_STEP["per_device_train_batch_size"],
                                             metadata={"help": "Pairs per device and forward pass."})
    gradient_accumulation_steps: int = field(default=_STEP["gradient_accumulation_steps"],
                                             metadata={"help": "Forward passes per optimizer step."})
    max_length: int | None = field(default=_STEP["max_length"], metadata={"help": "Longest prompt + side, in tokens."})
    num_train_epochs: float = field(default=_STEP["num_train_epochs"], metadata={"help": "Passes over the pairs."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Logging integrations."})
    kinds: tuple[str, ...] = field(default=_STEP["kinds"], metadata={"help": "Pair kinds to train on."})
    eos_policy: EosPolicy = field(
        default=_STEP["eos_policy"],
        metadata={"help": "auto: EOS only after a side that ends its solution; never; always (plain TRL)."},
    )
    boundary: BoundaryPolicy = field(
        default=_STEP["boundary"],
        metadata={"help": "A token split at the prompt/step boundary: fix (re-encode, verified), drop, or error."},
    )
    keep_unverified: bool = field(
        default=False,
        metadata={"help": "Also train on pairs whose chosen side failed its check (chosen_verified False); "
                          "they are left out and counted by default."},
    )


@dataclass
class SCDPOConfig(StepDPOConfig):
    """SCDPO: the shared prefix as prompt, the whole continuation (ending in EOS) as chosen/rejected."""

    beta: float = field(default=_SC["beta"], metadata={"help": "SCDPO used 0.1."})
    learning_rate: float = field(default=_SC["learning_rate"], metadata={"help": "SCDPO used 1e-7."})
    kinds: tuple[str, ...] = field(default=_SC["kinds"], metadata={"help": "Pair kinds to train on."})


@dataclass
class DPOBaselineConfig(StepDPOConfig):
    """Plain DPO on whole solutions: the baseline every step-level comparison needs."""

    beta: float = field(default=_DPO["beta"], metadata={"help": "DPO temperature."})
    learning_rate: float = field(default=_DPO["learning_rate"], metadata={"help": "Step-DPO's, for a fair baseline."})
    kinds: tuple[str, ...] = field(default=_DPO["kinds"], metadata={"help": "Pair kinds to train on."})


CONFIGS: dict[str, type[StepDPOConfig]] = {
    "stepdpo": StepDPOConfig,
    "scdpo": SCDPOConfig,
    "dpo": DPOBaselineConfig,
}
