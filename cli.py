"""The ``stepdata`` command: every stage and tool of the toolkit as a subcommand.

Each subcommand is a thin wrapper over a library call of the same name, so what
a user runs in a shell is what a notebook runs in Python. The commands live in
``stepdata.commands`` (the stage commands' options are generated from the stages'
Config dataclasses); this file only assembles them under ``main``.
"""

from __future__ import annotations

import logging

import click

import stepdata
from stepdata.commands import (
    annotate,
    audit,
    bench,
    data,
    evaluate,
    experiment,
    export,
    models,
    pairs,
    recipes,
    selftrain,
    solve,
    stages,
    text,
    train,
)
from stepdata.generation.engine_logs import configure_engine_logs, inherit_engine_logs
from stepdata.secrets import install_secret_filter, scrub_secrets

# vLLM's worker processes import this module again: there, quiet the engines' loggers as `main` chose
inherit_engine_logs()


class ScrubbedGroup(click.Group):
    """A group whose commands' one-line errors never show a secret (a server may echo the API key)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = scrub_secrets(exc.message)
            raise


@click.group(cls=ScrubbedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(stepdata.__version__, prog_name="stepdata")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v our info lines and the engines' (vLLM, torch, transformers) warnings and "
                   "load bars, -vv their info lines, -vvv debug. Without it the engines print only errors.")
def main(verbose: int) -> None:
    """Build step-level preference data for math reasoning, and train on it.

    \b
    Data sets by name (read from --data-dir or $STEPDATA_DATA_DIR, never downloaded):
      embedded[:N], gsm8k, gsm8k:train, math500, svamp, multiarith, asdiv, asdiv-a,
      processbench:gsm8k, processbench:math, processbench:olympiadbench,
      processbench:omnimath
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    install_secret_filter()  # no log line, traceback or error shows an API key (a server may echo it)
    configure_engine_logs(verbose)  # before any engine is imported: they read it at start-up


for command in (
    data.problems_cmd, data.make_problems_cmd, data.datasets_cmd, data.show_cmd,
    text.check_cmd, text.extract_cmd, text.split_cmd, text.prompts_cmd,
    models.model_group, models.generate_cmd, models.serve_cmd,
    bench.bench_group,
    pairs.merge_cmd, pairs.combine_cmd, pairs.stats_cmd, audit.audit_cmd, audit.compare_cmd, pairs.pairs_group,
    annotate.annotate_cmd,
    export.export_cmd,
    evaluate.eval_cmd,
    solve.solve_cmd,
    selftrain.selftrain_cmd,
    train.train_cmd,
    *stages.COMMANDS,
    *recipes.COMMANDS,
    *experiment.COMMANDS,
):
    main.add_command(command)


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    main()
