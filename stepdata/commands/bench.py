"""``bench``: measure localizers on labelled data (ProcessBench), to choose one before localizing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stepdata.commands.common import (
    LocalizerName,
    engine_options,
    make_engine,
    plugin_option,
)
from stepdata.commands.config_options import build_config, config_options
from stepdata.io import write_text_atomic
from stepdata.loaders import PROCESSBENCH_SUBSETS
from stepdata.pipeline.localize import LocalizeConfig

# the localizer options a ProcessBench sample can use (it has no policy to continue, and no gold answer)
BENCH_EXCLUDES = ("method", "rollouts", "search", "answer_timeout", "last_number_fallback")
# ProcessBench's published protocol: one greedy critique per sample
BENCH_DEFAULTS = {"votes": 1}
BENCH_HELP = {"votes": "Judge replies per sample: 1 is ProcessBench's protocol (greedy); more are sampled votes "
                       "(temperature 1.0, top_p 0.9 unless given) and a majority vote."}
SWEEP_HELP = ("Score-based localizers (evidence with step_scores): also score other thresholds without scoring "
              "again (a step below T is the first error) and print threshold -> F1 per subset and average F1. "
              "Thresholds comma-separated; --sweep alone: 0.05, 0.10, ..., 0.95.")


def parse_sweep(value: str | None) -> tuple[float, ...] | None:
    """``--sweep``'s thresholds: None when not asked, the default grid for a bare ``--sweep``."""
    from stepdata.bench.scoring import DEFAULT_SWEEP

    if value is None:
        return None
    if value == "default":
        return DEFAULT_SWEEP
    try:
        thresholds = tuple(float(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers", param_hint="--sweep") from None
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise click.BadParameter(f"{value!r}: thresholds are numbers in [0, 1]", param_hint="--sweep")
    return tuple(sorted(set(thresholds)))


def plan_subsets(subsets: tuple[str, ...], files: tuple[str, ...], data_dir: str | None) -> tuple[list[tuple[str, str | None]], dict[str, str]]:
    """What to score: [(subset name, file or None for the data folder's)] and the absent subsets skipped.

    Named subsets must be present; with neither --subset nor --data, every present one is scored.
    """
    from stepdata.bench.processbench import present_subsets

    present, absent = present_subsets(data_dir)
    plan: list[tuple[str, str | None]] = []
    skipped: dict[str, str] = {}
    if subsets:
        for subset in subsets:
            if subset in absent:
                raise click.ClickException(f"ProcessBench subset {subset!r}: {absent[subset]} does not exist"
                                           + ("" if data_dir else " (give --data-dir or set STEPDATA_DATA_DIR)"))
            plan.append((subset, None))
    elif not files:
        if not present:
            raise click.ClickException("no ProcessBench subset found: expected " + ", ".join(absent.values())
                                       + ("" if data_dir else " (give --data-dir or set STEPDATA_DATA_DIR)")
                                       + ", or give --data FILE")
        plan, skipped = [(subset, None) for subset in present], absent
    for file in files:
        plan.append((Path(file).stem, file))
    names = [name for name, _ in plan]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise click.ClickException(f"subset name(s) {repeated} given twice (a --data file is named by its stem)")
    return plan, skipped


@click.group("bench")
def bench_group() -> None:
    """Measure localizers on labelled data."""


@bench_group.command("processbench")
@engine_options(required=False)
@plugin_option
@click.option("--localizer", type=LocalizerName(), default="rules", show_default=True,
              help="Any registered localizer that reads no more than the question and the steps. With prm, "
                   "--model is the PRM and --backend its engine (vllm or hf).")
@config_options(LocalizeConfig, exclude=BENCH_EXCLUDES, defaults=BENCH_DEFAULTS, help=BENCH_HELP)
@click.option("--subset", "subsets", multiple=True, type=click.Choice(list(PROCESSBENCH_SUBSETS)),
              help="A subset (repeatable), read from DATA_DIR/processbench/<subset>.json. Default: every subset "
                   "whose file is there (the absent ones are named).")
@click.option("--data", "files", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Also score this file in ProcessBench's format (a JSON list, JSON lines or Parquet of id, "
                   "problem, steps, label), as a subset named after its stem. Repeatable; without --subset, only the files are scored.")
@click.option("--limit", type=click.IntRange(min=1),
              help="Score only N samples of each subset (the first N/2 erroneous and N/2 correct).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="The data folder holding processbench/<subset>.json (default: $STEPDATA_DATA_DIR).")
@click.option("--sweep", "sweep_values", is_flag=False, flag_value="default", default=None, metavar="[T1,T2,...]",
              help=SWEEP_HELP)
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the settings, results, average, sweep and every prediction (with step_scores) here.")
def bench_processbench_cmd(backend: str, model: str | None, base_url: str | None, tokenizer: str | None,
                           engine_options: tuple[str, ...], localizer: str, subsets: tuple[str, ...],
                           files: tuple[str, ...], limit: int | None, data_dir: str | None, sweep_values: str | None,
                           json_out: str | None, plugins: tuple[str, ...], **settings) -> None:
    """Score a localizer in ProcessBench's protocol: per subset accuracy on erroneous and on correct samples,
    F1, cost; then the average F1 over the subsets.

    \b
    stepdata bench processbench --localizer rules --data-dir ../shared/data
    stepdata bench processbench --localizer judge --backend vllm --model DIR        # greedy, as published
    stepdata bench processbench --localizer judge --model DIR --votes 8             # 8 votes at T=1.0, top_p 0.9
    stepdata bench processbench --localizer judge --model DIR --judge-template pb_critique.txt
    stepdata bench processbench --localizer NAME --sweep 0.3,0.5,0.7                # a score-based localizer
    """
    import contextlib

    from stepdata.bench.processbench import (
        HEADER,
        average,
        average_row,
        load_samples,
        run_processbench,
    )
    from stepdata.localize import make_localizer, required_options

    thresholds = parse_sweep(sweep_values)
    if "generator" in required_options(localizer) and model is None:
        raise click.UsageError(f"--localizer {localizer} needs --model (the judge)")
    if localizer == "prm":  # --model is the PRM, --backend its engine
        from stepdata.commands.prm_options import prm_settings

        settings = prm_settings(settings, backend, model)
    config = build_config(LocalizeConfig, settings, method=localizer)
    plan, skipped = plan_subsets(subsets, files, data_dir)
    loaded = {}
    for subset, path in plan:  # every subset read before any is scored: a bad record stops nothing half-done
        try:
            loaded[subset] = load_samples(subset, data_dir=data_dir, path=path, limit=limit)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    options = {k: v for k, v in config.options().items() if k != "answer_policy"}  # ProcessBench gives no answer
    needs_model = model is not None and config.uses_model()
    engine = (make_engine(backend, model, base_url, tokenizer, engine_options) if needs_model
              else contextlib.nullcontext())
    results, predictions = [], []
    with engine as generator:
        try:
            chosen = make_localizer(localizer, **options, **({"generator": generator} if needs_model else {}))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        for subset, path in plan:
            try:
                results.append(run_processbench(subset, chosen, data_dir=data_dir, path=path,
                                                predictions=predictions, samples=loaded[subset]))
            except ValueError as exc:  # a localizer that needs what ProcessBench does not give
                raise click.ClickException(str(exc)) from None
    click.echo(describe(localizer, model if needs_model else None, config, options))
    for subset, path in skipped.items():
        click.echo(f"skipped {subset}: {path} is not there")
    click.echo(HEADER)
    for result in results:
        click.echo(result.row())
    click.echo(average_row(results))
    if [r.subset for r in results] != list(PROCESSBENCH_SUBSETS):
        click.echo(f"average F1 over {', '.join(r.subset for r in results)}; ProcessBench's published average "
                   f"covers its four subsets ({', '.join(PROCESSBENCH_SUBSETS)})")
    for result in results:
        if result.no_verdict:
            click.echo(f"{result.subset}: {result.no_verdict} of {result.samples} samples got no prediction "
                       f"(scored wrong on both sides)"
                       + (f"; {result.unreadable} unreadable judge replies" if result.unreadable else "")
                       + (f"; {result.errors} failed (first: {result.first_error})" if result.errors else ""))
    recorded = {k: v for k, v in config.recorded().items() if k in options or k == "method"}
    report: dict[str, Any] = {"localizer": localizer, "model": model if needs_model else None, "settings": recorded,
                              "skipped": skipped, "subsets": [vars(r) for r in results], "average": average(results),
                              "sweep": None, "predictions": predictions}
    failed = None
    if thresholds is not None:
        try:
            report["sweep"] = run_sweep(predictions, thresholds, operating_threshold(options, predictions))
        except ValueError as exc:
            failed = f"sweep: {exc}"
    if json_out:
        write_text_atomic(json_out, json.dumps(report, indent=1, default=str))
    if failed:
        raise click.ClickException(failed)


def describe(localizer: str, model: str | None, config: LocalizeConfig, options: dict[str, Any]) -> str:
    """The first line of the report: the localizer and, for a judge, its protocol, template and decoding."""
    text = f"localizer: {localizer}"
    if model is not None and "votes" in options:
        temperature, top_p = config.judge_decoding()
        decoding = "greedy" if temperature == 0 else f"temperature {temperature:g}, top_p {top_p:g}"
        template = f", template {config.judge_template}" if config.judge_template else ""
        text += (f" (judge {model}, {config.protocol} protocol{template}, {config.votes} "
                 f"vote{'s' if config.votes > 1 else ''}, {decoding}, at most {config.judge_max_tokens} tokens)")
    elif model is not None:
        text += f" (model {model})"
    return text


def operating_threshold(options: dict[str, Any], predictions: list[dict[str, Any]]) -> float | None:
    """The threshold the localizer ran at: its ``threshold`` option, else the one its evidence names (if one)."""
    if options.get("threshold") is not None:
        return float(options["threshold"])
    named = {p["threshold"] for p in predictions if isinstance(p.get("threshold"), (int, float))}
    return float(named.pop()) if len(named) == 1 else None


def run_sweep(predictions: list[dict[str, Any]], thresholds: tuple[float, ...],
              operating: float | None) -> dict[str, Any] | None:
    """Print the threshold sweep (with its warning) and return it for --json; None when nothing has step scores."""
    from stepdata.bench.scoring import (
        SWEEP_WARNING,
        has_step_scores,
        sweep,
        sweep_table,
    )

    if not has_step_scores(predictions):
        click.echo("sweep: the localizer's evidence has no step_scores, so there is nothing to sweep "
                   "(only score-based localizers, e.g. a PRM, give them)", err=True)
        return None
    grid = tuple(sorted(set(thresholds) | ({operating} if operating is not None else set())))
    rows = sweep(predictions, grid)
    without = sum(p.get("step_scores") is None for p in predictions)
    click.echo("")
    click.echo(f"threshold sweep ({len(predictions) - without} samples rescored from their step_scores"
               + (f"; {without} without step_scores keep their prediction" if without else "") + "):")
    click.echo(sweep_table(rows, operating))
    click.echo(SWEEP_WARNING)
    return {"warning": SWEEP_WARNING, "operating_threshold": operating,
            "rows": [{"threshold": r.threshold, "average_f1": r.average_f1,
                      "subsets": {name: vars(s) for name, s in r.subsets.items()}} for r in rows]}
