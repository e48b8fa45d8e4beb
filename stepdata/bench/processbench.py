"""ProcessBench's protocol: accuracy on erroneous samples, on correct samples, and their F1.

Any :class:`~stepdata.localize.base.Localizer` is scored; it sees each sample's
question and steps (never the label). Its answer per sample is a prediction:
status "error" predicts its error_step, "no_error" predicts -1 ("no error").
Accuracy on erroneous samples counts exact indices; accuracy on correct samples
counts -1 answers; F1 is their harmonic mean (as published with ProcessBench).
Any other answer ("unknown": e.g. a judge none of whose replies could be read;
"unfinished"; a failure) is no prediction and is wrong on both subsets, as in the
reference harness: a judge that never answers must not score 100% on correct
samples. Such samples are counted (``no_verdict``), and so are the unreadable
replies a localizer reports in its evidence (``unreadable``). The rules' "no
false claim" is a real prediction of -1.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stepdata.loaders import load_problems
from stepdata.localize.base import (
    Localization,
    Localizer,
    Solution,
    locate_checked,
    needs_of,
)

# What a ProcessBench sample gives a localizer: the question and the steps; no gold answer, reference or meta.
_GIVEN = {"question"}


@dataclass
class BenchResult:
    subset: str
    samples: int
    erroneous: int
    correct: int
    acc_erroneous: float
    acc_correct: float
    f1: float
    seconds: float
    calls: int = 0
    tokens: int = 0
    unreadable: int = 0  # judge replies that could not be read (never guessed)
    no_verdict: int = 0  # samples with no prediction (scored wrong on both subsets)

    def row(self) -> str:
        return (f"| {self.subset:18s} | {self.samples:7d} | {100 * self.acc_erroneous:9.1f} | {100 * self.acc_correct:9.1f} "
                f"| {100 * self.f1:5.1f} | {self.calls:6d} | {self.tokens:8d} | {self.unreadable:10d} | {self.seconds:7.1f} |")


HEADER = ("| subset             | samples | err. acc. | corr. acc |    F1 |  calls |   tokens | unreadable | seconds |\n"
          "|--------------------|---------|-----------|-----------|-------|--------|----------|------------|---------|")


def prediction(found: Localization) -> int | None:
    """The index a localization predicts: its step for "error", -1 for "no_error", else None (no prediction)."""
    return {"error": found.error_step, "no_error": -1}.get(found.status)


def run_processbench(subset: str, localizer: Localizer, *, data_dir: str | None = None, limit: int | None = None,
                     predictions: list[dict[str, Any]] | None = None) -> BenchResult:
    """Score ``localizer`` on ``processbench:<subset>`` (gsm8k or math); ``limit`` takes a balanced slice."""
    lacking = needs_of(localizer) - _GIVEN
    if lacking:
        raise ValueError(f"localizer {localizer.name!r} needs the problems' {', '.join(sorted(lacking))}, "
                         "which ProcessBench does not give (it gives the question and the steps)")
    problems: pd.DataFrame = load_problems(f"processbench:{subset}", data_dir=data_dir)
    if limit is not None:  # a balanced slice: the first limit/2 erroneous and limit/2 correct samples
        labels = problems.meta.map(lambda m: json.loads(m)["label"])
        erroneous = problems[labels != -1].head(limit - limit // 2)
        correct = problems[labels == -1].head(limit // 2)
        problems = pd.concat([erroneous, correct]).sort_index().reset_index(drop=True)
    start = time.monotonic()
    right_err = n_err = right_ok = n_ok = calls = tokens = unreadable = no_verdict = 0
    metas = [json.loads(m) for m in problems.meta]
    solutions = [Solution(str(pid), str(pid), question, meta["steps"])
                 for pid, question, meta in zip(problems.problem_id, problems.question, metas)]
    for row, meta, found in zip(problems.itertuples(), metas, locate_checked(localizer, solutions)):
        # no prediction: a mismatch whatever the label (never read as "no error")
        predicted = prediction(found)
        no_verdict += predicted is None
        calls += found.calls
        tokens += found.tokens
        unreadable += int(found.evidence.get("unreadable", 0))
        if meta["label"] == -1:
            n_ok += 1
            right_ok += predicted == -1
        else:
            n_err += 1
            right_err += predicted == meta["label"]
        if predictions is not None:
            predictions.append({"id": row.problem_id, "label": meta["label"], "predicted": predicted})
    acc_err = right_err / n_err if n_err else 0.0
    acc_ok = right_ok / n_ok if n_ok else 0.0
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return BenchResult(f"processbench:{subset}", len(problems), n_err, n_ok, acc_err, acc_ok, f1,
                       time.monotonic() - start, calls, tokens, unreadable, no_verdict)
