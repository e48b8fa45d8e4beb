"""ProcessBench's protocol: accuracy on erroneous samples, on correct samples, and their F1.

A localizer answers, per sample, the 0-based index of the earliest wrong step or
-1 ("no error"). Accuracy on erroneous samples counts exact indices; accuracy on
correct samples counts -1 answers; F1 is their harmonic mean (as published with
ProcessBench). A localizer that cannot tell (None) is scored as -1.
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

    def row(self) -> str:
        return (f"| {self.subset:18s} | {self.samples:7d} | {100 * self.acc_erroneous:9.1f} | {100 * self.acc_correct:9.1f} "
                f"| {100 * self.f1:5.1f} | {self.calls:6d} | {self.tokens:8d} | {self.unreadable:10d} | {self.seconds:7.1f} |")


HEADER = ("| subset             | samples | err. acc. | corr. acc |    F1 |  calls |   tokens | unreadable | seconds |\n"
          "|--------------------|---------|-----------|-----------|-------|--------|----------|------------|---------|")


def rules_localizer(items: list[JudgeItem]) -> list[tuple[int | None, dict[str, Any]]]:
    from stepdata.localize.rules import localize_by_rules

    return [(localize_by_rules(list(item.steps)).error_step, {"calls": 0, "tokens": 0}) for item in items]


def judge_localizer(judge: JudgeLocalizer, fallback_rules: bool = False) -> Localizer:
    """A batch localizer from a judge (optionally: rules first, the judge where rules find nothing)."""
    from stepdata.localize.rules import localize_by_rules

    def localize(items: list[JudgeItem]) -> list[tuple[int | None, dict[str, Any]]]:
        found = {item.item_id: localize_by_rules(list(item.steps)).error_step for item in items} if fallback_rules else {}
        ask = [item for item in items if found.get(item.item_id) is None]
        verdicts = {item.item_id: v for item, v in zip(ask, judge.localize(ask))}
        out = []
        for item in items:
            if found.get(item.item_id) is not None:
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
    right_err = n_err = right_ok = n_ok = calls = tokens = unreadable = 0
    metas = [json.loads(m) for m in problems.meta]
    items = [JudgeItem(str(pid), question, meta["steps"]) for pid, question, meta in zip(problems.problem_id, problems.question, metas)]
    answers = localizer(items)
    for row, meta, (predicted, cost) in zip(problems.itertuples(), metas, answers):
        predicted = -1 if predicted is None else int(predicted)
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
                       time.monotonic() - start, calls, tokens, unreadable)
