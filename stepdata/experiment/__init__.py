"""``stepdata experiment``: does step-level preference data make the policy better? The miniature of the papers'
comparisons (DPO, Step-DPO and its out-of-distribution ablation, SCDPO, their mix, sDPO, DPO-ST), end to end
with our own pipeline, with intervals and paired tests, resumable.

An experiment recipe is YAML with ``out`` and an ``experiment`` mapping of
:class:`ExperimentConfig` settings (the shipped one: ``stepdata recipe show experiment``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepdata.experiment.config import ARM_NAMES, BUDGETS, ExperimentConfig

RECIPE_KEYS = ("out", "experiment")

__all__ = ["ARM_NAMES", "BUDGETS", "ExperimentConfig", "load_experiment", "run_experiment"]


def load_experiment(name_or_path: str, overrides: Mapping[str, Any] | None = None, budget: str | None = None,
                    out: str | None = None) -> tuple[ExperimentConfig, Path]:
    """An experiment recipe (a file, or the shipped recipe's name) as (config, output folder).

    ``overrides`` (``--set NAME=VALUE``) replace the recipe's settings; ``budget`` and ``out``
    (the command's ``--budget`` and ``--out``) win over both. A key the config does not have is
    refused naming it.
    """
    import yaml

    from stepdata.recipe import RecipeError, recipe_text
    from stepdata.settings import config_from_mapping

    try:
        data = yaml.safe_load(recipe_text(name_or_path)) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{name_or_path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or "experiment" not in data:
        raise RecipeError(f"{name_or_path}: an experiment recipe has an 'experiment:' mapping of settings "
                          f"(see `stepdata recipe show experiment`); `stepdata run` runs pipeline recipes")
    unknown = sorted(set(data) - set(RECIPE_KEYS))
    if unknown:
        raise RecipeError(f"{name_or_path}: unknown top-level key(s) {unknown}; an experiment recipe has "
                          f"{list(RECIPE_KEYS)}")
    settings = dict(data.get("experiment") or {}) | dict(overrides or {})
    if budget is not None:
        settings["budget"] = budget
    config = config_from_mapping(ExperimentConfig, settings, "experiment")
    return config, Path(out or data.get("out") or "runs/experiment")


def run_experiment(config: ExperimentConfig, out: str | Path, echo: Any = None) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out`` (see :mod:`stepdata.experiment.runner`)."""
    from stepdata.experiment.runner import run_experiment as run

    return run(config, out, echo=echo)
