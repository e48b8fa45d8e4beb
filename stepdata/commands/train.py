"""``train``: SFT warm-up, Step-DPO, SCDPO or DPO on a model folder, reading stepdata's tables.

The trainers live in the ``trainers`` package (the train extra); this command only turns options
into overrides of its defaults, so the help shows the defaults the trainer really uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from stepdata.commands.common import load_units
from stepdata.io import SchemaError
from stepdata.loaders import BadRowError
from trainers.defaults import default, defaults_help


@click.command("train")
@click.argument("method", type=click.Choice(["sft", "stepdpo", "scdpo", "dpo"]))
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False), help="Model folder to start from.")
@click.option("--data", required=True,
              help="stepdpo/scdpo/dpo: a pairs table, or `stepdata export --format parquet|jsonl` output (e.g. its "
                   "OUT.train.parquet); sft: a problems table or data set name.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the trained model.")
@click.option("--epochs", type=float, help=f"Passes over the data ({defaults_help('num_train_epochs')}).")
@click.option("--max-steps", type=int,
              help="Stop after this many optimizer steps (default: none, --epochs decides); train_report.json logs "
                   "every step.")
@click.option("--lr", "learning_rate", type=float,
              help=f"Peak learning rate, {default('stepdpo', 'lr_scheduler_type')} schedule with "
                   f"{default('stepdpo', 'warmup_steps'):.0%} warm-up ({defaults_help('learning_rate')}).")
@click.option("--beta", type=float, help=f"DPO temperature ({defaults_help('beta')}).")
@click.option("--batch-size", type=int, help=f"Per-device batch size ({defaults_help('per_device_train_batch_size')}).")
@click.option("--grad-accum", type=int,
              help=f"Gradient accumulation steps ({defaults_help('gradient_accumulation_steps')}).")
@click.option("--max-length", type=int, help=f"Longest sequence in tokens ({defaults_help('max_length')}).")
@click.option("--kinds", help=f"Comma-separated pair kinds to use ({defaults_help('kinds')}).")
@click.option("--eos-policy", type=click.Choice(["auto", "never", "always"]),
              help=f"EOS after chosen/rejected: auto = only where the side ends its solution "
                   f"({defaults_help('eos_policy')}).")
@click.option("--boundary", type=click.Choice(["fix", "drop", "error"]),
              help=f"A token split at the prompt/step boundary: re-encode (verified), drop the row, or stop "
                   f"({defaults_help('boundary')}).")
@click.option("--keep-unverified", is_flag=True,
              help="Also train on pairs whose chosen side failed its check (chosen_verified False).")
@click.option("--stages", type=int, default=1, show_default=True, help="sDPO: train in this many stages.")
@click.option("--rollouts", type=click.Path(exists=True, dir_okay=False),
              help="sDPO: rollouts table whose per-problem accuracy orders the stages (easiest first).")
@click.option("--lora-r", type=int, help="Train a LoRA adapter of this rank (merged into the saved model).")
@click.option("--template", help=f"sft: prompt template (default: {default('sft', 'template')}).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Where named data sets live (sft with a data set name).")
@click.option("--seed", type=int, help=f"Training seed ({defaults_help('seed')}).")
def train_cmd(method: str, model: str, data: str, out: str, epochs: float | None, max_steps: int | None,
              learning_rate: float | None, beta: float | None, batch_size: int | None, grad_accum: int | None,
              max_length: int | None, kinds: str | None, eos_policy: str | None, boundary: str | None, stages: int,
              rollouts: str | None, lora_r: int | None, template: str | None, data_dir: str | None,
              seed: int | None, keep_unverified: bool) -> None:
    """Train MODEL with METHOD (sft warm-up, stepdpo, scdpo or dpo) and save it to OUT."""
    try:
        from trainers.train import train
    except ImportError as exc:
        raise click.ClickException(f"training needs the train extra (pip install 'stepdata[train]'): {exc}") from None
    overrides = {"num_train_epochs": epochs, "max_steps": max_steps, "learning_rate": learning_rate,
                 "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
                 "max_length": max_length, "seed": seed}
    if method == "sft":
        overrides["template"] = template
        try:
            table = load_units(data, "problems", data_dir)  # a problems table, any problems file, or a set name
        except (ValueError, FileNotFoundError, BadRowError, SchemaError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        from stepdata.pairs.export import missing_pairs_hint

        if not Path(data).exists():
            raise click.ClickException(missing_pairs_hint(data))
        table = data
        overrides.update(beta=beta, eos_policy=eos_policy, boundary=boundary, keep_unverified=keep_unverified or None,
                         kinds=tuple(k.strip() for k in kinds.split(",")) if kinds else None)
    try:
        record = train(method, model, table, out, stages=stages, rollouts=rollouts, lora_r=lora_r, **overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: v for k, v in record.items() if k != "log"}, indent=2, default=str))
    click.echo(f"saved {method} model to {out}")
