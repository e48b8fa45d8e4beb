"""``stepdata run RECIPE.yaml``, ``stepdata recipe list|show`` and ``stepdata quickstart`` (the shipped recipe)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from stepdata.commands.config_options import build_config, config_options
from stepdata.pipeline.executor import RunOptions
from stepdata.quickstart import QuickstartConfig

SHARD_FIELDS = ("rank", "world_size")


@click.command("run")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Change a var of the recipe, e.g. --set samples=8 (repeatable).")
@click.option("--only", metavar="STEP",
              help="Run only the step named STEP, reading earlier steps' outputs where the recipe writes them "
                   "(one task of a SLURM array: see `stepdata slurm`).")
@config_options(RunOptions, exclude=tuple(f.name for f in dataclasses.fields(RunOptions) if f.name not in SHARD_FIELDS))
def run_cmd(recipe: str, overrides: tuple[str, ...], only: str | None, **shard) -> None:
    """Run the pipeline described in RECIPE (a YAML file, or a shipped recipe's name); resumable.

    With --only STEP (a stage step) inside a SLURM array job, or with --rank/--world-size,
    that step runs one shard; `stepdata merge --out STEP_OUT` then joins the shards and the
    whole recipe, run again, goes on from there.
    """
    from stepdata.pipeline.run import RUN_ERRORS
    from stepdata.recipe import RecipeError, load_recipe, parse_overrides, run_recipe

    try:
        loaded = load_recipe(recipe, parse_overrides(overrides))
        summary = run_recipe(loaded, only=only, **shard)
    except (RecipeError, ValueError, FileNotFoundError, *RUN_ERRORS) as exc:
        raise click.ClickException(str(exc)) from None
    if only is not None:
        click.echo(f"ran step {only} in {summary['total_seconds']:.0f}s")
        return
    click.echo(f"ran {len(loaded.steps)} steps in {summary['total_seconds']:.0f}s; results in "
               f"{loaded.out / loaded.summary}")


@click.command("slurm")
@click.argument("recipe")
@click.option("--step", required=True, metavar="NAME", help="The recipe's stage step to run as a SLURM array.")
@click.option("--ranks", required=True, type=click.IntRange(min=1), help="Array tasks (shards) to split the step into.")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Change a var of the recipe (passed to every task and used for the merge's path; repeatable).")
@click.option("--partition", help="#SBATCH --partition.")
@click.option("--gpus", type=click.IntRange(min=1), help="GPUs per array task (#SBATCH --gres=gpu:G).")
@click.option("--cpus", type=click.IntRange(min=1), help="#SBATCH --cpus-per-task.")
@click.option("--mem", help="#SBATCH --mem (e.g. 64G).")
@click.option("--time", help="#SBATCH --time (e.g. 04:00:00).")
@click.option("--setup", help="A line each job runs first, e.g. 'source .venv/bin/activate'.")
@click.option("--stepdata", "stepdata_cmd", default="stepdata", show_default=True,
              help="How the nodes call stepdata (after --setup).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="slurm", show_default=True,
              help="Folder for the scripts (and the tasks' logs).")
def slurm_cmd(recipe: str, step: str, ranks: int, overrides: tuple[str, ...], partition: str | None,
              gpus: int | None, cpus: int | None, mem: str | None, time: str | None, setup: str | None,
              stepdata_cmd: str, out: str) -> None:
    """Write SLURM scripts running recipe step STEP as an array of --ranks shards, then merging them.

    OUT/STEP.array.sbatch runs `stepdata run RECIPE --only STEP` as rank $SLURM_ARRAY_TASK_ID;
    OUT/STEP.merge.sbatch runs `stepdata merge` on the step's output; OUT/submit.sh submits
    both (the merge after every task succeeded). Then `stepdata run RECIPE` goes on.
    """
    from stepdata.recipe import RecipeError
    from stepdata.slurm import SlurmResources, describe, write_slurm_scripts

    try:
        scripts = write_slurm_scripts(recipe, step, ranks, out, overrides=overrides, setup=setup,
                                      stepdata=stepdata_cmd,
                                      resources=SlurmResources(partition, gpus, cpus, mem, time))
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(describe(scripts, recipe, overrides))


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


COMMANDS = (run_cmd, slurm_cmd, recipe_group, quickstart_cmd)
