"""The main job on the embedded default: the shipped recipe ``quickstart``, sized by :class:`QuickstartConfig`.

With nothing but the set-up done, it makes embedded problems, builds
SmolLM2-135M-Instruct from its PyPI wheel, warms it up with SFT (as shipped it
solves almost none of them), then runs sample -> localize (exact on this data) ->
rectify -> synthesize -> combine -> export -> audit. One engine (vLLM when
installed, transformers otherwise) serves every generation step. Every step is
resumable: started again, it skips what is finished.

The steps are ``stepdata/recipes/quickstart.yaml``; this module only maps the
command's options onto the recipe's vars, so ``stepdata quickstart --samples 8`` and
``stepdata run quickstart.yaml --set samples=8`` are the same run. Sizes are chosen
to finish in well under 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stepdata.settings import SettingError, check_settings, setting


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes and settings of the main job (the recipe's vars; its defaults are the recipe's)."""

    problems: int = setting(48, "Problems to mine pairs from.", minimum=1)
    samples: int = setting(4, "Solutions sampled per problem.", minimum=1)
    sft_steps: int = setting(48, "SFT warm-up optimizer steps.", minimum=1)
    eval_problems: int = setting(64, "Held-out problems the warmed-up policy is scored on.", minimum=1)
    backend: str = setting("auto", "auto: vLLM when installed, transformers otherwise.", choices=("auto", "vllm", "hf"))
    model: str | None = setting(None, "Start from this model folder instead of SmolLM2-135M-Instruct.")
    seed: int = setting(0, "Seed of the problems, the sampling and the training.")
    sft_problems: int = setting(512, "Problems of the SFT warm-up.", minimum=1)
    sft_batch_size: int = setting(8, "SFT batch size.", minimum=1)
    sft_learning_rate: float = setting(3e-4, "SFT learning rate.", minimum=0, min_open=True)
    min_steps: int = setting(2, "Fewest steps of an embedded problem.", cli="--min-problem-steps", minimum=2, maximum=6)
    max_steps: int = setting(3, "Most steps of an embedded problem.", cli="--max-problem-steps", minimum=2, maximum=6)
    rectify_samples: int = setting(4, "Continuations per wrong rollout (rectify).", minimum=1)
    rectify_per_problem: int = setting(2, "Wrong rollouts rectified per problem.", minimum=1)
    eval_base: bool = setting(True, "Also score the model as shipped, for the before/after.")
    synth_rounds: int = setting(2, "Continuations tried per cut point (synthesize).", minimum=1)
    synth_cuts: int = setting(1, "Cut points per solution (synthesize).", minimum=1)
    max_tokens: int = setting(192, "Most tokens per sample, continuation and evaluation answer.", minimum=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.min_steps > self.max_steps:
            raise SettingError("min_steps", f"min_steps ({self.min_steps}) is larger than max_steps ({self.max_steps})")

    def recipe_vars(self, out: str | Path) -> dict[str, Any]:
        """The recipe's vars for this config (model None: the recipe's SmolLM2)."""
        return {k: v for k, v in asdict(self).items() if v is not None} | {"out": str(out)}


def run_quickstart(out: str | Path, config: QuickstartConfig = QuickstartConfig(),
                   echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the main job into ``out``; returns (and writes to ``out/quickstart.json``) every step's result."""
    from stepdata.recipe import load_recipe, run_recipe

    return run_recipe(load_recipe("quickstart", config.recipe_vars(out)), echo=echo)
