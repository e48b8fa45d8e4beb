"""``stepdata experiment RECIPE``: the arms of the step-level comparison, trained and evaluated, with a report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from stepdata.experiment.config import BUDGETS, ExperimentConfig


def _settings_help() -> str:
    """Every setting --set takes, with its help (read from the Config, so it cannot drift)."""
    lines = []
    for field in dataclasses.fields(ExperimentConfig):
        default = field.default
        shown = ("from the budget" if default is None and field.name in BUDGETS["full"] else
                 ",".join(map(str, default)) if isinstance(default, tuple) else str(default))
        lines.append(f"  {field.name} ({shown}): {field.metadata.get('help', '')}")
    budgets = "\n".join(f"  {name}: " + ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                                                   for k, v in preset.items()) for name, preset in BUDGETS.items())
    return "\b\nSettings (--set NAME=VALUE, or the recipe's experiment: mapping):\n" + "\n".join(lines) + \
        "\n\n\b\nBudgets (the sizes a recipe leaves unset):\n" + budgets


@click.command("experiment", epilog=_settings_help())
@click.argument("recipe", default="experiment")
@click.option("--budget", type=click.Choice(sorted(BUDGETS)), help="small: a smoke test of every part in minutes; "
                                                                   "full: the measurement (wins over the recipe).")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Output folder (default: the recipe's out). Started again, the run resumes.")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Change a setting, e.g. --set steps=32 --set arms=dpo,stepdpo (repeatable).")
@click.option("--data-from", type=click.Path(file_okay=False, exists=True),
              help="Start OUT with this experiment folder's data build and start-policy evaluations (copied), "
                   "to train a variant on the same pairs (e.g. another learning rate).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Check everything and print the resolved settings and the units to run; run nothing.")
def experiment_cmd(recipe: str, budget: str | None, out: str | None, overrides: tuple[str, ...],
                   data_from: str | None, plan_only: bool) -> None:
    """Does step-level data make the model better? RECIPE (a file, or the shipped recipe `experiment`) names a
    start policy; one data build from it (sample, localize, rectify, synthesize) feeds every arm (DPO, Step-DPO,
    Step-DPO with gold chosen steps, SCDPO, Step-DPO + SCDPO, sDPO, DPO-ST), each trained with the same budget
    and evaluated with the start policy on the same held-out sets. OUT gets experiment.json, tables/ and
    report.html (accuracies with 95% intervals, paired tests against DPO, margins, accuracy by first error).
    Started again, it resumes: a finished unit is never redone, a changed setting is refused naming it."""
    from stepdata.experiment import load_experiment
    from stepdata.experiment.runner import (
        ExperimentError,
        check_experiment,
        run_experiment,
        stale_units,
    )
    from stepdata.pipeline.run import RUN_ERRORS
    from stepdata.recipe import RecipeError, parse_overrides

    try:
        config, folder = load_experiment(recipe, parse_overrides(overrides), budget=budget, out=out)
    except (RecipeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if data_from is not None and not plan_only:
        from stepdata.experiment.units import seed_from

        try:
            for path in seed_from(Path(data_from), Path(folder)):
                click.echo(f"copied {path}", err=True)
        except FileNotFoundError as exc:
            raise click.ClickException(str(exc)) from None
    if plan_only:
        units = [f"{arm} seed {seed}" for arm in config.arms for seed in config.seeds_of(arm)]
        reasons = check_experiment(config)
        stale = [] if reasons else stale_units(config, folder)
        click.echo(json.dumps({"out": str(folder), "settings": config.record(), "training_units": units,
                               "eval_sets": list(config.eval_sets), "cannot_start": reasons,
                               "stale_units": stale}, indent=1, default=str))
        if reasons or stale:
            raise click.ClickException("the experiment cannot start as configured (see cannot_start / stale_units)")
        return
    try:
        card = run_experiment(config, folder)
    except (ExperimentError, *RUN_ERRORS) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo((folder / "tables" / "results.md").read_text(), nl=False)
    for line in card["reading"]:
        click.echo(f"- {line}")
    click.echo(f"report: {folder / 'report.html'}; model card: {folder / 'experiment.json'}; "
               f"took {card['timing']['this_run_seconds']:.0f}s this run")


COMMANDS = (experiment_cmd,)
