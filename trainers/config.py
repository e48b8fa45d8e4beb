"""Configs for the preference trainers: TRL's ``DPOConfig`` with each paper's defaults.

Trainer+Config pairs as in TRL: every TRL/transformers option still works
(``StepDPOConfig(output_dir=..., per_device_train_batch_size=...)``); we only
change defaults and add the options of our data step.

Defaults and where they come from:

- Step-DPO (Lai et al., 2024): beta 0.4-0.5, learning rate 5e-7, cosine schedule,
  warm-up 10% of the steps. We use beta 0.4.
- SCDPO (Lu et al., 2024): beta 0.1, learning rate 1e-7.
- DPO baseline: beta 0.1 and Step-DPO's schedule, so that a comparison changes
  the data, not the optimizer.

Gradient checkpointing is off by default (TRL turns it on): the models this
toolkit is used with on CPU and in tests are small, and recomputation costs a
third of the step time; turn it on for large models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from trainers.data import BoundaryPolicy, EosPolicy


@dataclass
class StepDPOConfig(DPOConfig):
    """Step-DPO: prompt = chat template + correct prefix; chosen/rejected = step k only."""

    beta: float = field(default=0.4, metadata={"help": "DPO temperature; Step-DPO used 0.4-0.5."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Step-DPO used 5e-7."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Step-DPO used a cosine schedule."})
    warmup_steps: float = field(default=0.1, metadata={"help": "A float below 1 is a share of all steps."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Logging integrations."})
    kinds: tuple[str, ...] = field(default=("step-dpo",), metadata={"help": "Pair kinds to train on."})
    eos_policy: EosPolicy = field(
        default="auto",
        metadata={"help": "auto: EOS only after a side that ends its solution; never; always (plain TRL)."},
    )
    boundary: BoundaryPolicy = field(
        default="fix",
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

    beta: float = field(default=0.1, metadata={"help": "SCDPO used 0.1."})
    learning_rate: float = field(default=1e-7, metadata={"help": "SCDPO used 1e-7."})
    kinds: tuple[str, ...] = field(default=("scdpo",), metadata={"help": "Pair kinds to train on."})


@dataclass
class DPOBaselineConfig(StepDPOConfig):
    """Plain DPO on whole solutions: the baseline every step-level comparison needs."""

    beta: float = field(default=0.1, metadata={"help": "DPO temperature."})
    kinds: tuple[str, ...] = field(default=("dpo",), metadata={"help": "Pair kinds to train on."})


CONFIGS: dict[str, type[StepDPOConfig]] = {
    "stepdpo": StepDPOConfig,
    "scdpo": SCDPOConfig,
    "dpo": DPOBaselineConfig,
}
