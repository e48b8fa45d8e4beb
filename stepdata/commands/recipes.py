"""``stepdata run RECIPE.yaml``, ``stepdata recipe list|show`` and ``stepdata quickstart`` (the shipped recipe)."""

from __future__ import annotations

from pathlib import Path

import click

from stepdata.commands.config_options import build_config, config_options
from stepdata.quickstart import QuickstartConfig


@click.command("run")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Change a var of the recipe, e.g. --set samples=8 (repeatable).")
def run_cmd(recipe: str, overrides: tuple[str, ...]) -> None:
    """Run the pipeline described in RECIPE (a YAML file, or a shipped recipe's name); resumable."""
    from stepdata.pipeline.run import RUN_ERRORS
    from stepdata.recipe import RecipeError, load_recipe, parse_overrides, run_recipe

    try:
        loaded = load_recipe(recipe, parse_overrides(overrides))
        summary = run_recipe(loaded)
    except (RecipeError, ValueError, FileNotFoundError, *RUN_ERRORS) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ran {len(loaded.steps)} steps in {summary['total_seconds']:.0f}s; results in "
               f"{loaded.out / loaded.summary}")


@click.group("recipe")
def recipe_group() -> None:
    """The recipes shipped with stepdata (copy one, edit it, `stepdata run` it)."""


@recipe_group.command("list")
def recipe_list_cmd() -> None:
    """List the shipped recipes."""
    from stepdata.recipe import shipped_recipes

    for name in shipped_recipes():
        click.echo(name)


@recipe_group.command("show")
@click.argument("name")
def recipe_show_cmd(name: str) -> None:
    """Print shipped recipe NAME (e.g. `stepdata recipe show quickstart > my.yaml`)."""
    from stepdata.recipe import RecipeError, recipe_text

    try:
        click.echo(recipe_text(name), nl=False)
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("quickstart")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/quickstart", show_default=True,
              help="Folder for everything the job makes (started again, it resumes).")
@config_options(QuickstartConfig)
def quickstart_cmd(out: str, **options) -> None:
    """The main job on the embedded default (the shipped recipe `quickstart`): problems, SmolLM2, SFT warm-up,
    sample, localize, rectify, synthesize, export and an audit report, all into OUT."""
    try:
        import trainers.train  # noqa: F401 - fail early with a clear message
        from stepdata.quickstart import run_quickstart
    except ImportError as exc:
        raise click.ClickException(f"the quickstart needs the hf and train extras (bash setup.sh): {exc}") from None
    config = build_config(QuickstartConfig, options)
    if config.model is not None and not Path(config.model).is_dir():
        raise click.BadParameter(f"{config.model} is not a model folder", param_hint="--model")
    from stepdata.pipeline.run import RUN_ERRORS

    try:
        summary = run_quickstart(out, config)
    except RUN_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    export = summary["export"]
    confirmed = export["chosen_confirmed"]
    share = "n/a" if confirmed["share"] is None else f"{confirmed['share']:.0%}"
    before = summary.get("eval_base", {}).get("accuracy")
    click.echo(f"held-out accuracy: {'n/a' if before is None else f'{before:.1%}'} as shipped, "
               f"{summary['eval_heldout']['accuracy']:.1%} after the SFT warm-up")
    click.echo(f"rollouts: {summary['sample']['labels']}")
    click.echo(f"pairs: {export['total']} {export['by_kind']}; after filters {export['after_filters']} "
               f"(train {export['train']}, test {export['test']})")
    click.echo(f"chosen steps confirmed by the exact checker: {confirmed['confirmed']} of {confirmed['of']} ({share})")
    click.echo(f"took {summary['total_seconds']:.0f}s; report: {Path(out) / 'report.html'}; "
               f"summary: {Path(out) / 'quickstart.json'}")


COMMANDS = (run_cmd, recipe_group, quickstart_cmd)
