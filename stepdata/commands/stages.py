"""The four stage commands: sample, localize, rectify, synthesize.

Each is its stage block's Config, the engine's and the executor's settings turned
into options (:mod:`stepdata.commands.config_options`), plus the input table. The
input's lineage (problems, template, model) fills what the user does not give; the
local executor checks the output folder before any engine loads.
"""

from __future__ import annotations

import click
import pandas as pd

from stepdata.commands.common import (
    LocalizerName,
    VerifierName,
    load_units,
    plugin_option,
)
from stepdata.commands.config_options import build_config, config_options
from stepdata.generation.engine_config import EngineConfig
from stepdata.io import SchemaError, read_metadata, read_table
from stepdata.keyvalues import KeyValueError
from stepdata.loaders import BadRowError
from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.executor import RunOptions, StageResult, make_executor
from stepdata.pipeline.lineage import (
    lineage_of,
    load_lineage_problems,
    problems_reference,
)
from stepdata.pipeline.localize import LocalizeConfig, describe_judge
from stepdata.pipeline.ray_executor import RayOptions
from stepdata.pipeline.rectify import RectifyConfig, RectifyStage
from stepdata.pipeline.run import RUN_ERRORS
from stepdata.pipeline.sample import SampleConfig, SampleStage
from stepdata.pipeline.synthesize import SynthesizeConfig, SynthesizeStage
from stepdata.pipeline.verify import describe_verify

USER_ERRORS = (*RUN_ERRORS, SchemaError, BadRowError, FileNotFoundError, KeyValueError, ValueError)

data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
                               help="Folder holding the named data sets ($STEPDATA_DATA_DIR).")


def stage_options(config_cls: type, *, limit_help: str, model_help: str | None = None, exclude: tuple[str, ...] = (),
                  kinds: dict[str, click.ParamType] | None = None):
    """The options every stage command has: --out, the run's, the engine's and the stage Config's."""
    def decorate(func):
        func = config_options(config_cls, exclude=exclude, kinds=kinds)(func)
        func = data_dir_option(func)
        func = config_options(EngineConfig, help={"model": model_help} if model_help else None)(func)
        func = config_options(RunOptions, exclude=("out",), help={"limit": limit_help})(func)
        func = config_options(RayOptions)(func)
        return click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
                            help="Output table (.parquet).")(func)
    return decorate


def execute(block: StageBlock, table: pd.DataFrame, options: dict) -> StageResult:
    """Run ``block`` with the executor ``--executor`` names; a user's mistake becomes a one-line error, and the
    engine is released."""
    try:
        return make_executor(build_config(RunOptions, options), build_config(RayOptions, options)).run(block, table)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        block.close()


def engine_config(options: dict) -> EngineConfig:
    """The engine the options describe (with ``--ray-tensor-parallel-size`` among its options)."""
    return build_config(RayOptions, options).engine(build_config(EngineConfig, options))


def _user_error(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


@click.command("sample")
@click.argument("problems")
@stage_options(SampleConfig, limit_help="Use only the first N problems.")
def sample_cmd(problems: str, data_dir: str | None, **options) -> None:
    """Stage 1: sample N step-by-step solutions per problem of PROBLEMS and check their answers."""
    engine = engine_config(options)
    if engine.model is None:
        raise click.UsageError("sample needs --model (the policy)")
    config = build_config(SampleConfig, options)  # an option out of range is a usage error before anything loads
    table = _user_error(load_units, problems, "problems", data_dir)
    block = _user_error(SampleStage, engine, config)
    block.inherit({"problems": problems_reference(problems)})
    result = execute(block, table, options)
    stats = result.stats
    click.echo(f"wrote {result.summary.get('rows')} rollouts ({result.summary.get('error_rows')} with errors) to "
               f"{result.path}; accuracy {stats.get('accuracy')}; summary in {result.path}.summary.json")


def _problems_for(source: str, given: str | None, data_dir: str | None, needed_by: str) -> tuple[dict, pd.DataFrame | None]:
    """The input's lineage and its problems (``--problems`` wins; None when neither gives any)."""
    lineage = lineage_of(source)
    try:
        problems = load_lineage_problems(lineage.get("problems"), data_dir, given=given, needed_by=needed_by)
    except FileNotFoundError:
        if given is not None:
            raise
        problems = None  # the stage says so if its localizer (or it) needs them
    return lineage, problems


@click.command("localize")
@click.argument("rollouts_table", metavar="SOURCE", type=click.Path(exists=True, dir_okay=False))
@stage_options(LocalizeConfig, limit_help="Use only the first N rows of ROLLOUTS.",
               model_help="The judge (judge methods) or the policy (rollouts method).", exclude=("method",))
@plugin_option
@click.option("--method", type=LocalizerName(), default=LocalizeConfig.method, show_default=True,
              help=LocalizeConfig.__dataclass_fields__["method"].metadata["help"])
@click.option("--problems", "problems_source",
              help="Problems table or data set (default: the one SOURCE records).")
def localize_cmd(rollouts_table: str, problems_source: str | None, data_dir: str | None, plugins: tuple[str, ...],
                 **options) -> None:
    """Stage 2: find the first wrong step of every wrong rollout in SOURCE.

    SOURCE is a rollouts table, or a localized table to localize again with another method
    (e.g. `--method human --labels FILE` with the labels people gave on `stepdata annotate`'s page).
    """
    from stepdata.annotate.source import read_solutions
    from stepdata.localize import required_options
    from stepdata.pipeline.localize import LocalizeStage

    config = build_config(LocalizeConfig, options)
    engine = engine_config(options)
    if "generator" in required_options(config.method) and engine.model is None:
        raise click.UsageError(f"--method {config.method} needs --model")
    if config.method == "human" and not config.labels:
        raise click.UsageError("--method human needs --labels FILE (the labels saved by `stepdata annotate`'s page, "
                               "or Label Studio's JSON export)")
    if _user_error(read_metadata, rollouts_table).get("kind") == "localized":
        table = _user_error(read_solutions, rollouts_table)[0]  # its wrong rollouts, as they were sampled
    else:
        table = _user_error(read_table, rollouts_table, kind="rollouts")
    lineage, problems = _user_error(_problems_for, rollouts_table, problems_source, data_dir, "localize")
    block = _user_error(LocalizeStage.build, engine if engine.model else None, problems, config)
    block.inherit(lineage)
    block.recorded = {"plugins": list(plugins)} if plugins else {}
    result = execute(block, table, options)
    stats, left_out = result.stats, result.stats.get("left_out", result.left_out)
    judge_line = f"{describe_judge(stats)}; " if "votes" in config.options() or "judge" in stats else ""
    click.echo(f"localized {stats['localized']} of {result.summary.get('rows')} wrong rollouts (no error found "
               f"{stats['no_error']}, unknown {stats['unknown']}, unfinished {stats['unfinished']}); {judge_line}"
               f"not localized: {left_out.get('correct', 0)} correct, {left_out.get('unjudged_or_failed', 0)} "
               f"unjudged or failed; wrote {result.path}")
    if "labels" in stats:
        labels = stats["labels"]
        missing = labels["not_in_table_ids"]
        named = f": {', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}" if missing else ""
        click.echo(f"labels: {labels['used']} of {labels['labels']} used ({labels['corrected_steps']} with a corrected "
                   f"step); {labels['not_in_table']} for solutions not in SOURCE{named} (all named in the summary)")


def run_pair_stage(block_cls: type, table: pd.DataFrame, problems: pd.DataFrame, lineage: dict, options: dict,
                   plugins: tuple[str, ...] = ()) -> None:
    """Rectify or synthesize with the policy given, or else the one the input's lineage records."""
    engine = engine_config(options)
    engine = engine.with_model(engine.model or lineage.get("model"))
    if engine.model is None:
        raise click.UsageError("give --model (the policy; the input table records none)")
    block = _user_error(block_cls, engine, problems, build_config(block_cls.Config, options))
    block.inherit(lineage)
    block.recorded = {"plugins": list(plugins)} if plugins else {}
    pair_stage_done(execute(block, table, options).stats, block_cls.name)


def pair_stage_done(stats: dict, what: str) -> None:
    outcomes = ", ".join(f"{k} {v}" for k, v in stats.get("outcomes", {}).items())
    click.echo(f"{what}: {stats['pairs']} pairs ({stats['pairs_by_kind']}) from {stats['units']} units; "
               f"outcomes: {outcomes}; capped per problem: {stats['capped_per_problem']}; "
               f"{describe_verify(stats)}; chosen verified: {stats['chosen_verified']}; "
               f"wrote {stats['pairs_output']}")


def pair_stage_options(config_cls: type, *, limit_help: str):
    """A pair stage's options: the stage's (``--verify`` checked against the registry, after the eager
    ``--plugin`` modules registered theirs) and ``--plugin``."""
    def decorate(func):
        func = plugin_option(func)
        return stage_options(config_cls, limit_help=limit_help, kinds={"verify": VerifierName()},
                             model_help="The policy (default: the model the rollouts were sampled with).")(func)
    return decorate


@click.command("rectify")
@click.argument("localized", type=click.Path(exists=True, dir_okay=False))
@pair_stage_options(RectifyConfig, limit_help="Use only the first N rows of LOCALIZED.")
@click.option("--problems", "problems_source",
              help="Problems table or data set (default: the one the localized table records).")
def rectify_cmd(localized: str, problems_source: str | None, data_dir: str | None, plugins: tuple[str, ...],
                **options) -> None:
    """Stage 3: continue every localized wrong rollout from its correct prefix with the same policy
    and pair the right continuations' first step with the wrong step (Step-DPO pairs)."""
    build_config(RectifyConfig, options)  # an option out of range is a usage error before anything loads
    table = _user_error(read_table, localized, kind="localized")
    lineage, problems = _user_error(_problems_for, localized, problems_source, data_dir, "rectify")
    if problems is None:
        raise click.UsageError("give --problems (the localized table records none)")
    run_pair_stage(RectifyStage, table, problems, lineage, options, plugins)


@click.command("synthesize")
@click.argument("source")
@pair_stage_options(SynthesizeConfig, limit_help="Use only the first N rows of SOURCE.")
@click.option("--problems", "problems_source",
              help="Problems table or data set (default: SOURCE's recorded problems when it is a rollouts table).")
def synthesize_cmd(source: str, problems_source: str | None, data_dir: str | None, plugins: tuple[str, ...],
                   **options) -> None:
    """Stage 4: step-controlled negatives from the correct rollouts in SOURCE (or from the reference
    solutions of a problems table): continue from step k at a rising temperature until the answer is wrong."""
    from pathlib import Path

    build_config(SynthesizeConfig, options)  # an option out of range is a usage error before anything loads
    is_rollouts = Path(source).exists() and source.endswith(".parquet") and \
        _user_error(read_metadata, source).get("kind") == "rollouts"
    if is_rollouts:
        table = _user_error(read_table, source, kind="rollouts")
        lineage, problems = _user_error(_problems_for, source, problems_source, data_dir, "synthesize")
        if problems is None:
            raise click.UsageError("SOURCE is a rollouts table that records no problems: give --problems for the "
                                   "questions and answers")
    else:
        problems = table = _user_error(load_units, source, "problems", data_dir)
        lineage = {"problems": problems_reference(source)}
    run_pair_stage(SynthesizeStage, table, problems, lineage, options, plugins)


COMMANDS = (sample_cmd, localize_cmd, rectify_cmd, synthesize_cmd)
