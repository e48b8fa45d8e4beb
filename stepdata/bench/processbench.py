"""ProcessBench's protocol: accuracy on erroneous samples, on correct samples, their F1, and the average F1.

Any :class:`~stepdata.localize.base.Localizer` is scored the same way (PRMs,
judges, rules); it sees each sample's question and steps (never the label). Its
answer per sample is a prediction: status "error" predicts its error_step,
"no_error" predicts -1 ("no error"). Any other answer ("unknown": e.g. a judge none
of whose replies could be read; "unfinished"; a failure) is no prediction and is
wrong on both subsets, as in the reference harness: a judge that never answers must
not score 100% on correct samples. Such samples are counted (``no_verdict``), and so
are the unreadable replies a localizer reports in its evidence (``unreadable``). The
rules' "no false claim" is a real prediction of -1.

The four subsets (gsm8k, math, olympiadbench, omnimath) are files
``processbench/<subset>.json`` in the data folder; any other file in ProcessBench's
format (a JSON list or JSON lines of id, problem, steps, label) is scored as a
subset named after its stem. The arithmetic is :mod:`stepdata.bench.scoring`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.bench.scoring import average_f1, score
from stepdata.loaders import KNOWN_SETS, PROCESSBENCH_SUBSETS, load_problems
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
    source: str = ""  # the file the samples came from
    errors: int = 0  # samples whose localizer failed (a request out of retries, a prompt too long): no prediction
    first_error: str | None = None

    def row(self) -> str:
        return (f"| {self.subset:18s} | {self.samples:7d} | {100 * self.acc_erroneous:9.1f} | {100 * self.acc_correct:9.1f} "
                f"| {100 * self.f1:5.1f} | {self.calls:6d} | {self.tokens:8d} | {self.unreadable:10d} | {self.seconds:7.1f} |")


HEADER = ("| subset             | samples | err. acc. | corr. acc |    F1 |  calls |   tokens | unreadable | seconds |\n"
          "|--------------------|---------|-----------|-----------|-------|--------|----------|------------|---------|")


def average(results: Sequence[BenchResult]) -> dict[str, Any]:
    """The final row: ProcessBench's average F1 over the subsets, and the cost summed over them."""
    return {"subsets": len(results), "average_f1": average_f1([r.f1 for r in results]),
            "samples": sum(r.samples for r in results), "calls": sum(r.calls for r in results),
            "tokens": sum(r.tokens for r in results), "unreadable": sum(r.unreadable for r in results),
            "no_verdict": sum(r.no_verdict for r in results), "seconds": sum(r.seconds for r in results)}


def average_row(results: Sequence[BenchResult]) -> str:
    """The average as a table row (the accuracies are per subset only, as ProcessBench reports them)."""
    mean = average(results)
    return (f"| {'average F1':18s} | {mean['samples']:7d} | {'':>9s} | {'':>9s} | {100 * mean['average_f1']:5.1f} "
            f"| {mean['calls']:6d} | {mean['tokens']:8d} | {mean['unreadable']:10d} | {mean['seconds']:7.1f} |")


def subset_path(subset: str, data_dir: str | os.PathLike | None) -> Path | None:
    """Where subset ``subset`` lives under ``data_dir`` (or $STEPDATA_DATA_DIR); None when no folder is given."""
    root = data_dir or os.environ.get("STEPDATA_DATA_DIR")
    return Path(root) / KNOWN_SETS[f"processbench:{subset}"][0] if root else None


def present_subsets(data_dir: str | os.PathLike | None) -> tuple[list[str], dict[str, str]]:
    """(the subsets whose files are present, {absent subset: the path looked for}), in ProcessBench's order."""
    present, absent = [], {}
    for subset in PROCESSBENCH_SUBSETS:
        path = subset_path(subset, data_dir)
        if path is not None and path.is_file():
            present.append(subset)
        else:
            absent[subset] = str(path) if path is not None else f"<data-dir>/processbench/{subset}.json"
    return present, absent


def load_samples(subset: str, *, data_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                 limit: int | None = None) -> pd.DataFrame:
    """A subset's samples as a problems table (steps and label in ``meta``), from ``path`` or the data folder.

    ``limit`` takes a balanced slice: the first limit - limit // 2 erroneous and limit // 2 correct samples.
    A bad record is an error naming the file, the record (its line or item, and id) and the field.
    """
    if path is not None:
        problems = load_problems(path, format="processbench", source=f"processbench-{subset}")
    else:
        if subset not in PROCESSBENCH_SUBSETS:
            raise ValueError(f"unknown ProcessBench subset {subset!r}; expected one of {list(PROCESSBENCH_SUBSETS)} "
                             "(or give the file)")
        problems = load_problems(f"processbench:{subset}", data_dir=data_dir)
    if limit is not None:
        labels = problems.meta.map(lambda m: json.loads(m)["label"])
        erroneous = problems[labels != -1].head(limit - limit // 2)
        correct = problems[labels == -1].head(limit // 2)
        problems = pd.concat([erroneous, correct]).sort_index().reset_index(drop=True)
    return problems


def prediction(found: Localization) -> int | None:
    """The index a localization predicts: its step for "error", -1 for "no_error", else None (no prediction)."""
    return {"error": found.error_step, "no_error": -1}.get(found.status)


def run_processbench(subset: str, localizer: Localizer, *, data_dir: str | os.PathLike | None = None,
                     path: str | os.PathLike | None = None, limit: int | None = None,
                     predictions: list[dict[str, Any]] | None = None,
                     samples: pd.DataFrame | None = None) -> BenchResult:
    """Score ``localizer`` on a ProcessBench subset (by name from ``data_dir``, or the file ``path``).

    ``samples`` are the subset's samples as :func:`load_samples` gave them (loaded
    here when not given; a caller scoring several subsets loads them all first, so a
    bad record stops the run before any scoring).

    ``predictions``, when given, gets one record per sample: id, subset, label,
    predicted (None: no prediction), status, the localizer's error if it failed, and
    from its evidence ``step_scores`` and ``threshold`` (what
    :func:`stepdata.bench.scoring.sweep` reads), ``votes`` and ``replies`` when it has them.
    """
    lacking = needs_of(localizer) - _GIVEN
    if lacking:
        raise ValueError(f"localizer {localizer.name!r} needs the problems' {', '.join(sorted(lacking))}, "
                         "which ProcessBench does not give (it gives the question and the steps)")
    problems = samples if samples is not None else load_samples(subset, data_dir=data_dir, path=path, limit=limit)
    source = str(path) if path is not None else str(subset_path(subset, data_dir))
    start = time.monotonic()
    calls = tokens = unreadable = no_verdict = errors = 0
    first_error = None
    metas = [json.loads(m) for m in problems.meta]
    solutions = [Solution(str(pid), str(pid), question, meta["steps"])
                 for pid, question, meta in zip(problems.problem_id, problems.question, metas)]
    pairs = []
    for pid, meta, found in zip(problems.problem_id, metas, locate_checked(localizer, solutions)):
        predicted = prediction(found)  # None: a mismatch whatever the label (never read as "no error")
        no_verdict += predicted is None
        calls += found.calls
        tokens += found.tokens
        unreadable += int(found.evidence.get("unreadable", 0))
        if found.error:
            errors += 1
            first_error = first_error or found.error
        pairs.append((meta["label"], predicted))
        if predictions is not None:
            record = {"id": pid, "subset": subset, "label": meta["label"], "predicted": predicted,
                      "status": found.status}
            if found.error:
                record["error"] = found.error
            # a score-based localizer's scores (for a threshold sweep); a judge's votes and replies, reasoning included
            record |= {key: found.evidence[key] for key in ("step_scores", "threshold", "votes", "replies")
                       if found.evidence.get(key) is not None}
            predictions.append(record)
    scored = score(pairs)
    return BenchResult(subset, len(problems), scored.erroneous, scored.correct, scored.acc_erroneous,
                       scored.acc_correct, scored.f1, time.monotonic() - start, calls, tokens, unreadable, no_verdict,
                       source, errors, first_error)

