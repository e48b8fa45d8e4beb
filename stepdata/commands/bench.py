"""``bench``: measure localizers on labelled data (ProcessBench), to choose one before localizing."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepdata.commands.common import (
    LocalizerName,
    engine_options,
    make_engine,
    plugin_option,
)


@click.group("bench")
def bench_group() -> None:
    """Measure localizers on labelled data."""


@bench_group.command("processbench")
@engine_options(required=False)
@plugin_option
@click.option("--localizer", type=LocalizerName(), default="rules", show_default=True,
              help="Any registered localizer that reads no more than the question and the steps.")
@click.option("--protocol", type=click.Choice(["processbench", "stepdpo"]), default="processbench", show_default=True)
@click.option("--votes", type=int, default=5, show_default=True)
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--judge-temperature", type=float, default=0.7, show_default=True)
@click.option("--judge-top-p", type=float, default=0.95, show_default=True)
@click.option("--rules-tolerance", type=click.Choice(["written", "rounded"]), default="written", show_default=True,
              help="Precision of the rules' arithmetic checks (see localize --rules-tolerance).")
@click.option("--subset", "subsets", multiple=True, type=click.Choice(["gsm8k", "math"]), default=("gsm8k", "math"),
              show_default=True)
@click.option("--limit", type=int, help="Score only the first N samples of each subset.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results and predictions here.")
def bench_processbench_cmd(backend: str, model: str | None, base_url: str | None, tokenizer: str | None,
                           engine_options: tuple[str, ...], localizer: str, protocol: str, votes: int,
                           judge_max_tokens: int, judge_temperature: float, judge_top_p: float, rules_tolerance: str,
                           subsets: tuple[str, ...], limit: int | None, data_dir: str | None,
                           json_out: str | None, plugins: tuple[str, ...]) -> None:
    """Score a localizer in ProcessBench's protocol (accuracy on erroneous / correct samples, F1, cost)."""
    import contextlib

    from stepdata.bench.processbench import HEADER, run_processbench
    from stepdata.localize import make_localizer, options_for, required_options

    if "generator" in required_options(localizer) and model is None:
        raise click.UsageError(f"--localizer {localizer} needs --model (the judge)")
    options = options_for(localizer, {"rules_tolerance": rules_tolerance, "protocol": protocol, "votes": votes,
                                      "judge_max_tokens": judge_max_tokens, "judge_temperature": judge_temperature,
                                      "judge_top_p": judge_top_p})
    needs_model = model is not None and "generator" in options_for(localizer, {"generator": None})
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
    click.echo(f"localizer: {localizer}" + (f" (judge {model}, {protocol} protocol, {votes} votes)" if needs_model and "votes" in options else ""))
    click.echo(HEADER)
    for line in lines:
        click.echo(line)
    for result in report:
        if result["no_verdict"]:
            click.echo(f"{result['subset']}: {result['no_verdict']} of {result['samples']} samples got no readable "
                       f"verdict (scored wrong on both subsets)")
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=1))
