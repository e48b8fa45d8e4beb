"""SFT warm-up on reference solutions in our step format (TRL's ``SFTTrainer``).

The first phase of every recipe here (Step-DPO's, DPO-ST's): a small model as
shipped rarely writes "Step k:" solutions that end in a checkable answer, so it
makes no useful pairs. A short SFT on problems with reference solutions fixes the
format and gives an accuracy where the model both succeeds and fails.

The prompt is the same chat the sampling stage sends (template with its partial
answer, e.g. "Let's think step by step.\\nStep 1:"), so the model learns to
continue exactly what it will be given; the loss is on the solution only, which
ends in EOS. Solutions that are not in step format (GSM8K's lines with
``#### answer``) are converted: one line a step, then "The answer is X.".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from stepdata.generation.templates import render_prompt
from stepdata.generation.types import GenerationRequest
from stepdata.io import read_table
from stepdata.prompts import load_prompt
from stepdata.steps import strip_partial_overlap, to_step_format
from trainers.data import BoundaryError, DataReport, encode_continuation
from trainers.defaults import DEFAULTS

_SFT = DEFAULTS["sft"]


@dataclass
class StepSFTConfig(SFTConfig):
    """SFT warm-up defaults: one cosine epoch, loss on the solution only, no recomputation."""

    learning_rate: float = field(default=_SFT["learning_rate"], metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=_SFT["num_train_epochs"], metadata={"help": "Passes over the problems."})
    lr_scheduler_type: str = field(default=_SFT["lr_scheduler_type"], metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=_SFT["warmup_steps"], metadata={"help": "A float below 1 is a share of all steps."})
    per_device_train_batch_size: int = field(default=_SFT["per_device_train_batch_size"],
                                             metadata={"help": "Problems per device and forward pass."})
    gradient_accumulation_steps: int = field(default=_SFT["gradient_accumulation_steps"],
                                             metadata={"help": "Forward passes per optimizer step."})
    max_length: int | None = field(default=_SFT["max_length"], metadata={"help": "Longest example, in tokens."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    completion_only_loss: bool | None = field(default=True, metadata={"help": "Loss on the solution tokens only."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Logging integrations."})
    template: str = field(default=_SFT["template"], metadata={"help": "Prompt template (name or path)."})


def sft_example(tokenizer: Any, template: Any, question: str, solution: str) -> tuple[dict[str, list[int]], str]:
    """``input_ids`` and ``completion_mask`` for one problem (EOS ends the solution), and how the
    prompt/solution boundary tokenized ("exact" or "fixed")."""
    messages = template.render(question=question)
    prompt_text = render_prompt(tokenizer, GenerationRequest.chat("sft", messages))
    completion = solution
    if template.continues_assistant:
        completion = strip_partial_overlap(messages[-1]["content"], solution)
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    completion_ids, boundary = encode_continuation(tokenizer, prompt_text, prompt_ids, completion)
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}, boundary


def sft_dataset(problems: pd.DataFrame, tokenizer: Any, template: str = "step_by_step") -> tuple[Dataset, DataReport]:
    """Problems with reference solutions -> a tokenized dataset; rows without a solution are reported."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one before training")
    prompt = load_prompt(template)
    report = DataReport(rows_in=len(problems))
    examples = []
    for row in problems.itertuples(index=False):
        solution = row.solution if isinstance(row.solution, str) else ""
        if not solution.strip():
            report.dropped.append({"pair_id": row.problem_id, "reason": "no_solution: the row has no reference solution"})
            continue
        answer = row.answer if isinstance(row.answer, str) else None
        try:
            example, boundary = sft_example(tokenizer, prompt, row.question, to_step_format(solution, answer))
        except (BoundaryError, KeyError, ValueError) as exc:
            report.dropped.append({"pair_id": row.problem_id, "reason": f"bad_row: {exc}"})
            continue
        examples.append(example)
        report.eos_added += 1
        if boundary == "exact":
            report.boundary_exact += 1
        else:
            report.boundary_fixed += 1
    report.rows_out = len(examples)
    if not examples:
        raise ValueError(f"no SFT examples: {report.rows_in} rows in, dropped by reason {report.dropped_by_reason}")
    return Dataset.from_list(examples), report


class StepSFTTrainer(SFTTrainer):
    """``SFTTrainer`` that takes a problems table (DataFrame or Parquet path) with reference solutions."""

    def __init__(self, model: Any, args: StepSFTConfig, train_dataset: Any, processing_class: Any, **kwargs: Any):
        if processing_class is None:
            raise ValueError("StepSFTTrainer needs the tokenizer (processing_class)")
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self.data_report = DataReport()
        if isinstance(train_dataset, (str, Path)):
            train_dataset = read_table(train_dataset, kind="problems")
        if isinstance(train_dataset, pd.DataFrame):
            train_dataset, self.data_report = sft_dataset(train_dataset, processing_class, args.template)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         **kwargs)
