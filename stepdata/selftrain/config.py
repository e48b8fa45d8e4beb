"""The settings of the DPO-ST loop, declared once (defaults, help, ranges) like every stage's Config.

Defaults follow DPO-ST (Wang, Li and Lu, ACL 2024) where its released scripts and
configs give a value, for their Llama-2-7B runs; where they differ for T5-large the help
says so. Where DPO-ST gives no value, the toolkit's own trainer defaults stand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stepdata.pairs.dpo_st import DPO_ST_PAIRS_PER_QUESTION, DPO_ST_THRESHOLD
from stepdata.settings import SettingError, check_settings, setting

METHODS = ("dpo-st", "st")
SFT_INITS = ("base", "last")


@dataclass(frozen=True)
class SelfTrainConfig:
    """The DPO-ST loop: warm-up SFT, then per iteration sample -> DPO pairs -> DPO -> pseudo-labels -> SFT."""

    method: str = setting("dpo-st", "dpo-st: each iteration trains DPO on pairs from the current SFT model and takes "
                                    "pseudo-labels from the DPO model (DPO-ST); st: plain self-training, pseudo-labels "
                                    "from the SFT model and no DPO.", choices=METHODS)
    iterations: int = setting(3, "Self-training iterations after the warm-up (DPO-ST ran 3). Raising it on a "
                                 "finished run goes on from where it stopped.", minimum=1)
    warmup: bool = setting(True, "Begin with SFT on the labelled data (DPO-ST's SFT-0); --no-warmup: --model is "
                                 "already fine-tuned and is iteration 0's model.")
    warmup_model: str | None = setting(None, "Iteration 0's model, already warmed up (e.g. another run's "
                                             "iter0/model-sft, to compare methods from one warm-up): no warm-up is "
                                             "trained, and base SFT still starts from --model.")
    sft_init: str = setting("base", "What each iteration's SFT starts from: base (--model, as DPO-ST) or last (that "
                                    "iteration's DPO model; with st, the previous SFT model).", choices=SFT_INITS)
    template: str = setting("step_by_step", "Prompt template of sampling, training and evaluation.")
    samples: int = setting(10, "Rationales sampled per question at each sampling (DPO-ST: 10).", minimum=1)
    temperature: float = setting(0.7, "Sampling temperature (DPO-ST: 0.7).", minimum=0, min_open=True)
    top_p: float = setting(1.0, "Nucleus sampling mass (DPO-ST samples at the temperature alone: 1.0).",
                           minimum=0, maximum=1, min_open=True)
    max_tokens: int = setting(300, "Most tokens per sampled or evaluated rationale (DPO-ST: 300).", minimum=1)
    pairs_per_question: int = setting(DPO_ST_PAIRS_PER_QUESTION, "DPO pairs kept per question, the least similar "
                                                                 "(chosen, rejected) first (DPO-ST: 3).", minimum=1)
    jaccard: float = setting(DPO_ST_THRESHOLD, "Two rationales whose word Jaccard similarity is above this are near "
                                               "duplicates: one is kept (DPO-ST: 0.7).", minimum=0, maximum=1)
    reference_positive: bool = setting(True, "The question's reference rationale is a positive too (DPO-ST); it "
                                             "gives every labelled question a chosen side.")
    pool: bool = setting(True, "Pairs and pseudo-labels also use the rationales sampled in earlier iterations "
                               "(DPO-ST's scripts pool them).")
    pseudo_per_question: int | None = setting(None, "Most pseudo-labels per question (default: the 90th percentile "
                                                    "of the per-question counts, as DPO-ST's scripts cap them).",
                                              minimum=1)
    dpo_beta: float = setting(0.1, "DPO temperature beta (DPO-ST: 0.1).", minimum=0, min_open=True)
    dpo_learning_rate: float = setting(3e-7, "DPO learning rate (DPO-ST: 3e-7 for Llama-2-7B, 7e-7 for T5-large).",
                                       minimum=0, min_open=True)
    dpo_epochs: float = setting(1.0, "Passes over the DPO pairs (DPO-ST stops after 100 optimizer steps of 16 pairs, "
                                     "under one pass: --dpo-max-steps 100 does that).", minimum=0, min_open=True)
    dpo_max_steps: int | None = setting(None, "Stop DPO after this many optimizer steps (default: --dpo-epochs "
                                              "decides).", minimum=1)
    sft_learning_rate: float = setting(2e-5, "SFT learning rate (DPO-ST: 2e-5 for Llama-2-7B, 3e-4 for T5-large).",
                                       minimum=0, min_open=True)
    sft_epochs: float = setting(2.0, "Passes over the SFT data (DPO-ST: 2 for Llama-2-7B, 8 for T5-large).",
                                minimum=0, min_open=True)
    sft_max_steps: int | None = setting(None, "Stop each SFT after this many optimizer steps (default: --sft-epochs "
                                              "decides).", minimum=1)
    batch_size: int = setting(8, "Per-device batch of SFT and DPO.", minimum=1)
    grad_accum: int = setting(2, "Gradient accumulation steps (8 x 2: DPO-ST's 16 examples per optimizer step).",
                              minimum=1)
    seed: int = setting(0, "Seed of sampling (iteration k samples with seed + k) and of training.")
    calculator: bool = setting(False, "Calculator-augmented decoding in every sampling and evaluation (DPO-ST "
                                      "decodes with a calculator).")
    sample_batch_size: int = setting(64, "Questions per resumable batch of a sampling stage.", minimum=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.warmup_model is not None and not self.warmup:
            raise SettingError("warmup_model", "give either warmup_model (iteration 0's model) or no warm-up (the base "
                                               "model is iteration 0's), not both")

    def identity(self) -> dict[str, Any]:
        """The settings a run's outputs depend on: all but ``iterations``, which a finished run may raise."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "iterations"}

    def sample_config(self, iteration: int) -> Any:
        """The sample stage's config for iteration ``iteration`` (its own seed)."""
        from stepdata.pipeline.sample import SampleConfig

        return SampleConfig(template=self.template, n=self.samples, temperature=self.temperature, top_p=self.top_p,
                            max_tokens=self.max_tokens, seed=self.seed + iteration, calculator=self.calculator)

    def train_options(self, method: str) -> dict[str, Any]:
        """Overrides of the trainers' defaults for ``method`` (sft or dpo); None keeps a trainer's default."""
        common = {"per_device_train_batch_size": self.batch_size, "gradient_accumulation_steps": self.grad_accum,
                  "seed": self.seed}
        if method == "dpo":
            return common | {"learning_rate": self.dpo_learning_rate, "beta": self.dpo_beta,
                             "num_train_epochs": self.dpo_epochs, "max_steps": self.dpo_max_steps}
        return common | {"learning_rate": self.sft_learning_rate, "num_train_epochs": self.sft_epochs,
                         "max_steps": self.sft_max_steps, "template": self.template}
