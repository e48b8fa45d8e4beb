"""One entry point for ``stepdata train``: load, train, save, report.

Kept apart from the trainers so the library classes stay TRL-shaped and this
file holds the choices a command line makes for people: the dtype (bf16 on a
GPU that has it, fp32 on CPU), LoRA when asked, where things are saved, and a
``train_report.json`` beside the model saying what data was used and left out,
the hyper-parameters the run resolved and a log entry for every optimizer step
(see :mod:`trainers.report`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from trainers.defaults import METHODS, RUN_DEFAULTS
from trainers.report import StepLines, hyperparameters, step_log

logger = logging.getLogger(__name__)


def _accelerator() -> tuple[bool, bool]:
    import torch

    cuda = torch.cuda.is_available()
    return cuda, cuda and torch.cuda.is_bf16_supported()


def load_model(path: str | Path, dtype: str = "auto") -> tuple[Any, Any]:
    """Model and tokenizer from a local folder (nothing is downloaded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, bf16 = _accelerator()
    torch_dtype = {"auto": torch.bfloat16 if bf16 else torch.float32, "bf16": torch.bfloat16,
                   "fp32": torch.float32}[dtype]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model, tokenizer


def lora_config(r: int, alpha: int | None = None, dropout: float = 0.05) -> Any:
    """A peft LoRA config on all linear layers (peft is imported only when asked for)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def build_config(method: str, output_dir: str | Path, **overrides: Any) -> Any:
    """The method's config with its paper defaults, then the caller's overrides (None means 'keep default')."""
    cuda, bf16 = _accelerator()
    if method == "sft":
        from trainers.sft import StepSFTConfig as config_class
    else:
        from trainers.config import CONFIGS

        config_class = CONFIGS[method]
    # RUN_DEFAULTS: seed 0, a log entry every optimizer step, no checkpoints; no progress bar
    # (StepLines prints a line per step instead, on stderr, log files included)
    values = {"output_dir": str(output_dir), "bf16": bf16, "use_cpu": not cuda, "disable_tqdm": True, **RUN_DEFAULTS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_class(**values)


def _quiet_printer(trainer: Any) -> Any:
    """Swap transformers' printed log dicts (stdout, one per step now) for our :class:`StepLines`."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def train(
    method: str,
    model_path: str | Path,
    data: str | Path | pd.DataFrame,
    output_dir: str | Path,
    stages: int = 1,
    rollouts: str | Path | None = None,
    lora_r: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` and save to ``output_dir``.

    ``data`` for the preference methods: a pairs DataFrame, a pairs table, or what
    ``stepdata export --format parquet|jsonl`` wrote (a split's train file), so the
    filtered, deduplicated, split data is what gets trained; for ``sft``: a problems
    table. Pairs are read before the model is loaded, so a wrong file fails at once.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method != "sft" and not isinstance(data, pd.DataFrame):
        from stepdata.pairs.export import read_pairs

        data = read_pairs(data)
    output_dir = Path(output_dir)
    model, tokenizer = load_model(model_path)
    args = build_config(method, output_dir, **overrides)
    peft_config = lora_config(lora_r) if lora_r else None
    started = time.perf_counter()
    record: dict[str, Any] = {"method": method, "model": str(model_path), "output_dir": str(output_dir),
                              "hyperparameters": hyperparameters(method, args, lora_r=lora_r, stages=stages)}
    lines = StepLines(f"train {method}")
    def fit(trainer_class: Any, dataset: Any) -> Any:
        """Train one trainer over ``dataset``; its loss, data report, step log and hyper-parameters go to the record."""
        trainer = _quiet_printer(trainer_class(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, peft_config=peft_config, callbacks=[lines]))
        output = trainer.train()
        record.update(train_loss=output.training_loss, data=trainer.data_report.as_dict(),
                      log=step_log(trainer.state.log_history))
        record["hyperparameters"] = hyperparameters(method, args, lora_r=lora_r, stages=stages,
                                                    optimizer_steps=trainer.state.max_steps)
        return trainer.model

    if method == "sft":
        from trainers.sft import StepSFTTrainer

        model = fit(StepSFTTrainer, data)
    else:
        from trainers.staged import train_staged
        from trainers.step_dpo import StepDPOTrainer, load_pairs

        pairs = load_pairs(data)
        if stages > 1:
            from stepdata.io import read_table

            rollouts_df = read_table(rollouts) if rollouts else None
            model, stage_records = train_staged(model, tokenizer, pairs, args, stages, rollouts_df, peft_config,
                                                callbacks=[lines])
            record.update(stages=stage_records)
        else:
            model = fit(StepDPOTrainer, pairs)
    if peft_config is not None and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # a plain model folder every backend can load
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record["seconds"] = round(time.perf_counter() - started, 1)
    # written last and atomically: its presence means "trained" (the quickstart resumes on it)
    from stepdata.io import write_text_atomic

    write_text_atomic(output_dir / "train_report.json", json.dumps(record, indent=2, default=str))
    return record
