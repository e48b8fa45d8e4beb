"""``StepDPOTrainer``: TRL's ``DPOTrainer`` fed by our data step.

The only thing we change in TRL is how a dataset becomes token ids: a pairs
table (DataFrame or Parquet path) is tokenized by :mod:`trainers.data` (our EOS
policy, the boundary check) and TRL's own preparation, which would append EOS to
every completion and re-tokenize, is skipped for it. Loss, reference model,
PEFT, accelerate/DeepSpeed and logging are TRL's. The collator's completion mask
covers exactly the chosen/rejected ids, so the loss is on the step tokens only.

The same class trains SCDPO and DPO pairs; the config decides the kinds and the
defaults (see :mod:`trainers.config`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset
from trl import DPOTrainer

from stepdata.io import read_table
from trainers.config import StepDPOConfig
from trainers.data import DataReport, tokenize_pairs

logger = logging.getLogger(__name__)

TOKENIZED_COLUMNS = {"prompt_ids", "chosen_ids", "rejected_ids"}


def load_pairs(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A pairs table from a DataFrame or a Parquet path (checked against the pairs schema)."""
    if isinstance(data, pd.DataFrame):
        return data
    return read_table(data, kind="pairs")


def pairs_dataset(pairs: pd.DataFrame, tokenizer: Any, args: StepDPOConfig) -> tuple[Dataset, DataReport]:
    """The data step: pairs table -> a tokenized ``datasets.Dataset`` and its report."""
    examples, report = tokenize_pairs(
        tokenizer,
        pairs,
        kinds=args.kinds,
        eos_policy=args.eos_policy,
        boundary=args.boundary,
        max_prompt_length=args.max_length if args.truncation_mode == "keep_start" else None,
        keep_unverified=args.keep_unverified,
    )
    if not examples:
        raise ValueError(
            f"no trainable pairs: {report.rows_in} rows in, kinds wanted {list(args.kinds)}, "
            f"dropped by reason {report.dropped_by_reason}"
        )
    return Dataset.from_list(examples), report


class StepDPOTrainer(DPOTrainer):
    """DPO on step-level pairs from a stepdata pairs table.

    ``train_dataset`` may be a pairs DataFrame, a pairs Parquet path, or an
    already tokenized dataset (``prompt_ids``/``chosen_ids``/``rejected_ids``).
    ``self.data_report`` says how many rows were used, repaired and left out.
    """

    def __init__(self, model: Any, args: StepDPOConfig, train_dataset: Any, processing_class: Any,
                 eval_dataset: Any = None, **kwargs: Any):
        if processing_class is None:
            raise ValueError("StepDPOTrainer needs the tokenizer (processing_class) to tokenize pairs")
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self.data_report = DataReport()
        if not isinstance(train_dataset, Dataset):
            train_dataset, self.data_report = pairs_dataset(load_pairs(train_dataset), processing_class, args)
            self._log_report("train", self.data_report)
        if eval_dataset is not None and not isinstance(eval_dataset, Dataset):
            eval_dataset, eval_report = pairs_dataset(load_pairs(eval_dataset), processing_class, args)
            self._log_report("eval", eval_report)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)

    @staticmethod
    def _log_report(name: str, report: DataReport) -> None:
        logger.info("%s pairs: %s", name, report.as_dict())
        for item in report.dropped[:5]:
            logger.warning("%s pair %s left out: %s", name, item["pair_id"], item["reason"])

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        columns = set(getattr(dataset, "column_names", None) or next(iter(dataset)).keys())
        if TOKENIZED_COLUMNS <= columns:
            return dataset  # our data step already tokenized it, with our EOS policy
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
