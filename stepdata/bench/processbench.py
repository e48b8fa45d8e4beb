"""ProcessBench's protocol: accuracy on erroneous samples, on correct samples, and their F1.

A localizer answers, per sample, the 0-based index of the earliest wrong step or
-1 ("no error"). Accuracy on erroneous samples counts exact indices; accuracy on
correct samples counts -1 answers; F1 is their harmonic mean (as published with
ProcessBench). A localizer that gives no prediction (None: e.g. a judge none of
whose replies could be read) is wrong on both subsets, as in the reference
harness: a judge that never answers must not score 100% on correct samples.
Such samples are counted (``no_verdict``), and so are the judge's unreadable
replies. The rules' "no false claim" is a real prediction of -1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stepdata.loaders import load_problems
from stepdata.localize.judge import JudgeItem, JudgeLocalizer
from stepdata.localize.rules import Tolerance, localize_by_rules

# Takes many solutions at once (a judge batches them into one generate call) and returns, per
# solution, the predicted index (None: cannot tell) and its cost {"calls": .., "tokens": ..}.
Localizer = Callable[[list["JudgeItem"]], list[tuple[int | None, dict[str, Any]]]]


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


def rules_localizer(items: list[JudgeItem], tolerance: Tolerance = "written") -> list[tuple[int | None, dict[str, Any]]]:
    """The rules as a batch localizer: the first false claim's step, or -1 when none is false."""
    return [(localize_by_rules(list(item.steps), tolerance).error_step, {"calls": 0, "tokens": 0}) for item in items]


def judge_localizer(judge: JudgeLocalizer, fallback_rules: bool = False, tolerance: Tolerance = "written") -> Localizer:
    """A batch localizer from a judge (optionally: rules first, the judge where rules find no false claim)."""

    def localize(items: list[JudgeItem]) -> list[tuple[int | None, dict[str, Any]]]:
        found: dict[str, int] = {}
        if fallback_rules:
            for item in items:
                step = localize_by_rules(list(item.steps), tolerance).error_step
                if step is not None and step >= 0:
                    found[item.item_id] = step
        ask = [item for item in items if item.item_id not in found]
        verdicts = {item.item_id: v for item, v in zip(ask, judge.localize(ask))} if ask else {}
        out: list[tuple[int | None, dict[str, Any]]] = []
        for item in items:
            if item.item_id in found:
                out.append((found[item.item_id], {"calls": 0, "tokens": 0}))
            else:
                verdict = verdicts[item.item_id]
                out.append((verdict.error_step, {"calls": verdict.calls, "tokens": verdict.tokens,
                                                 "unreadable": verdict.unreadable}))
        return out

    return localize


def run_processbench(subset: str, localizer: Localizer, *, data_dir: str | None = None, limit: int | None = None,
                     predictions: list[dict[str, Any]] | None = None) -> BenchResult:
    """Score ``localizer`` on ``processbench:<subset>`` (gsm8k or math); ``limit`` takes a balanced slice."""
    problems: pd.DataFrame = load_problems(f"processbench:{subset}", data_dir=data_dir)
    if limit is not None:  # a balanced slice: the first limit/2 erroneous and limit/2 correct samples
        labels = problems.meta.map(lambda m: json.loads(m)["label"])
        erroneous = problems[labels != -1].head(limit - limit // 2)
        correct = problems[labels == -1].head(limit // 2)
        problems = pd.concat([erroneous, correct]).sort_index().reset_index(drop=True)
    start = time.monotonic()
    right_err = n_err = right_ok = n_ok = calls = tokens = unreadable = no_verdict = 0
    metas = [json.loads(m) for m in problems.meta]
    items = [JudgeItem(str(pid), question, meta["steps"]) for pid, question, meta in zip(problems.problem_id, problems.question, metas)]
    answers = localizer(items)
    for row, meta, (predicted, cost) in zip(problems.itertuples(), metas, answers):
        # no prediction: a mismatch whatever the label (never read as "no error")
        predicted = None if predicted is None else int(predicted)
        no_verdict += predicted is None
        calls += cost.get("calls", 0)
        tokens += cost.get("tokens", 0)
        unreadable += cost.get("unreadable", 0)
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
