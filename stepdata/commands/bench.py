"""``bench``: measure localizers on labelled data (ProcessBench), to choose one before localizing."""

from __future__ import annotations

import json

import click

from stepdata.commands.common import (
    LocalizerName,
    engine_options,
    make_engine,
    plugin_option,
)
from stepdata.commands.config_options import build_config, config_options
from stepdata.io import write_text_atomic
from stepdata.pipeline.localize import LocalizeConfig

# the localizer options a ProcessBench sample can use (it has no policy to continue, and no gold answer)
BENCH_EXCLUDES = ("method", "rollouts", "search", "answer_timeout", "last_number_fallback")


@click.group("bench")
def bench_group() -> None:
    """Measure localizers on labelled data."""


@bench_group.command("processbench")
@engine_options(required=False)
@plugin_option
@click.option("--localizer", type=LocalizerName(), default="rules", show_default=True,
              help="Any registered localizer that reads no more than the question and the steps. With prm, "
                   "--model is the PRM and --backend its engine (vllm or hf).")
@config_options(LocalizeConfig, exclude=BENCH_EXCLUDES)
@click.option("--subset", "subsets", multiple=True, type=click.Choice(["gsm8k", "math"]), default=("gsm8k", "math"),
              show_default=True)
@click.option("--limit", type=int, help="Score only the first N samples of each subset.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results and predictions here.")
def bench_processbench_cmd(backend: str, model: str | None, base_url: str | None, tokenizer: str | None,
                           engine_options: tuple[str, ...], localizer: str, subsets: tuple[str, ...],
                           limit: int | None, data_dir: str | None, json_out: str | None, plugins: tuple[str, ...],
                           **settings) -> None:
    """Score a localizer in ProcessBench's protocol (accuracy on erroneous / correct samples, F1, cost)."""
    import contextlib

    from stepdata.bench.processbench import HEADER, run_processbench
    from stepdata.localize import make_localizer, required_options

    if "generator" in required_options(localizer) and model is None:
        raise click.UsageError(f"--localizer {localizer} needs --model (the judge)")
    if localizer == "prm":  # --model is the PRM, --backend its engine
        from stepdata.commands.prm_options import prm_settings

        settings = prm_settings(settings, backend, model)
    config = build_config(LocalizeConfig, settings, method=localizer)
    options = {k: v for k, v in config.options().items() if k != "answer_policy"}  # ProcessBench gives no answer
    needs_model = model is not None and config.uses_model()
    engine = (make_engine(backend, model, base_url, tokenizer, engine_options) if needs_model
              else contextlib.nullcontext())
    report = []
    with engine as generator:
        try:
            chosen = make_localizer(localizer, **options, **({"generator": generator} if needs_model else {}))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        lines = []
        for subset in subsets:
            predictions: list[dict] = []
            try:
                result = run_processbench(subset, chosen, data_dir=data_dir, limit=limit, predictions=predictions)
            except (FileNotFoundError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            lines.append(result.row())
            report.append(result.__dict__ | {"predictions": predictions})
    click.echo(f"localizer: {localizer}" + (f" (judge {model}, {config.protocol} protocol, {config.votes} votes)" if needs_model and "votes" in options else ""))
    click.echo(HEADER)
    for line in lines:
        click.echo(line)
    for result in report:
        if result["no_verdict"]:
            click.echo(f"{result['subset']}: {result['no_verdict']} of {result['samples']} samples got no readable "
                       f"verdict (scored wrong on both subsets)")
    if json_out:
        write_text_atomic(json_out, json.dumps(report, indent=1))
