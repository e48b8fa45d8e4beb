"""``solve``: answer every problem with a solving strategy (greedy, sample, best-of-n, StepCo), resumably."""

from __future__ import annotations

from typing import Any

import click

from stepdata.commands.common import LocalizerName, load_units, plugin_option
from stepdata.commands.config_options import build_config
from stepdata.commands.stages import _user_error, engine_config, execute, stage_options
from stepdata.pipeline.lineage import problems_reference
from stepdata.solve import SolveConfig, SolveStage


class VerifierOrNone(LocalizerName):
    """``--verifier``: none or a registered localizer's name (checked after the --plugin modules registered)."""

    name = "verifier"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from stepdata.localize import available_localizers

        return "[none|" + "|".join(available_localizers()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return value if value == "none" else super().convert(value, param, ctx)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def describe_solved(stats: dict[str, Any]) -> str:
    """One line: accuracy with its 95% interval (and each best-of-n selection's), tokens per problem, stops."""
    def accuracy(part: dict[str, Any]) -> str:
        low_high = part.get("ci95")
        interval = f" (95% CI {100 * low_high[0]:.1f}-{100 * low_high[1]:.1f}%)" if low_high else ""
        return f"{_pct(part.get('accuracy'))}{interval}"

    parts = [f"accuracy {accuracy(stats)}"]
    parts += [f"by {s} {accuracy(stats[f'by_{s}'])}" for s in ("verifier", "majority") if f"by_{s}" in stats]
    tokens = stats.get("tokens_per_problem", {})
    parts.append(f"tokens per problem: policy {tokens.get('policy')}, verifier {tokens.get('verifier')}")
    parts.append(f"stops: {stats.get('stop_reasons')}; errors {stats.get('errors')}")
    return "; ".join(parts)


@click.command("solve")
@click.argument("problems")
@plugin_option
@stage_options(SolveConfig, limit_help="Use only the first N problems.", kinds={"verifier": VerifierOrNone()})
def solve_cmd(problems: str, data_dir: str | None, plugins: tuple[str, ...], **options: Any) -> None:
    """Answer every problem of PROBLEMS with one strategy and write one row per problem (answer, correct,
    every attempt with the step the verifier rejected, policy and verifier tokens); resumable.

    \b
    stepco: one solution; the verifier (--verifier, any localizer) finds the first step it rejects (a PRM:
      the first below --threshold); the policy revises from there (--revision continue: resampled from the
      steps before it, kept byte for byte; prompt: asked to revise, shown the attempt, the step and its score),
      until the verifier accepts, two consecutive answers agree, or --max-iterations revisions.
    best-of-n: --n samples; the answer is picked by the verifier's score (--prm-aggregate min|last for a PRM)
      and/or by majority vote (--select verifier|majority|both: both records both picks).
    greedy, sample: one solution (as eval).
    """
    engine = engine_config(options)
    if engine.model is None:
        raise click.UsageError("solve needs --model (the policy)")
    config = _user_error(build_config, SolveConfig, options)
    table = _user_error(load_units, problems, "problems", data_dir)
    block = _user_error(SolveStage, engine, config)
    block.inherit({"problems": problems_reference(problems)})
    block.recorded = {"plugins": list(plugins)} if plugins else {}
    result = execute(block, table, options)
    click.echo(f"solved {result.summary.get('rows')} problems with {config.strategy}: {describe_solved(result.stats)}; "
               f"wrote {result.path} (summary in {result.path}.summary.json)")


def eval_by_solving(models: tuple[str, ...], problems: Any, label: str, config: SolveConfig, batch_size: int | None,
                    out: str | None, make_engine: Any) -> None:
    """``eval --strategy best-of-n|stepco``: each model solves the problems (resumably under ``out``) and one line
    per model is printed; ``out/eval.json`` gets every model's summary and ``out/NN-<model>.solved.parquet`` its rows."""
    import json
    import re
    import tempfile
    from pathlib import Path

    import stepdata
    from stepdata.io import write_text_atomic
    from stepdata.pipeline.run import RUN_ERRORS
    from stepdata.secrets import scrub_object
    from stepdata.solve import run_solve

    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="stepdata-eval-"))
    folder.mkdir(parents=True, exist_ok=True)
    summaries = []
    for index, model in enumerate(models):
        click.echo(f"solving {len(problems)} problems of {label} with {model} ({config.strategy}) ...", err=True)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or "model")[:60]
        path = folder / f"{index:02d}-{slug}.solved.parquet"
        generator = make_engine(model)
        try:
            _, stats = run_solve(generator, problems, str(path), config, batch_size=batch_size or max(len(problems), 1))
        except RUN_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            generator.close()
        click.echo(f"{model} | {label} | {len(problems)} problems | {describe_solved(stats)}")
        summaries.append({"model": model, "data": label, "rows_file": path.name, **stats})
    if out:
        report = {"stepdata_version": stepdata.__version__, "config": {"command": "eval", "data": label,
                                                                       "solve": config.__dict__}, "results": summaries}
        written = write_text_atomic(folder / "eval.json", json.dumps(scrub_object(report), indent=2, default=str) + "\n")
        click.echo(f"wrote {written}")
