"""Evaluate a model on a problem set: accuracy before and after training, in one call.

Evaluation is stage 1 (:class:`~stepdata.pipeline.SampleStage`) without the
preference-data bookkeeping: the same prompt template, the same requests, the
same answer extraction and batch answer check, so a score here means what the
rollouts' ``correct`` column means. What is added is the tally: accuracy,
pass@k and maj@k over ``n`` samples, token counts and time.

Nothing is counted as correct that was not checked. A request that failed, a
batch that raised, a model that did not load, an answer check that timed out or
a gold answer that cannot be read is a row with ``error`` set and ``correct``
null; it counts against ``accuracy`` (correct samples over all samples) and is
left out of ``accuracy_judged`` (correct over judged samples), and it never
stops the evaluation.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.answers import parse_plain_number
from stepdata.generation import Generator, SamplingConfig, make_generator

log = logging.getLogger(__name__)

EVAL_SEED = 12345  # embedded problems for evaluation: a seed that training data (seed 0, ...) does not use
GREEDY = SamplingConfig(n=1, temperature=0.0, max_tokens=512, seed=0)
ROW_COLUMNS = ["model", "problem_id", "sample", "source", "gold", "prompt", "completion", "pred_answer", "correct",
               "finish_reason", "prompt_tokens", "completion_tokens", "error", "calculator_calls", "calculator_changed"]


def load_eval_problems(
    data: str,
    *,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    seed: int = EVAL_SEED,
    n_problems: int = 100,
    min_steps: int = 2,
    max_steps: int = 6,
    columns: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, str]:
    """The problems to evaluate on and a label for them.

    ``data`` is ``embedded`` (``n_problems`` problems from the held-out ``seed``),
    ``embedded:N``, a known set (``gsm8k``, ``math500``, ``svamp``, ``multiarith``,
    with ``split`` where the set has several: ``gsm8k`` + ``train``), a problems
    table written by stepdata, or any file ``load_problems`` reads (``columns``
    maps our column names to the file's).
    """
    from stepdata.embedded import make_problems
    from stepdata.io import read_metadata, read_table
    from stepdata.loaders import KNOWN_SETS, load_problems

    if data == "embedded" or data.startswith("embedded:"):
        count = int(data.split(":", 1)[1]) if ":" in data else n_problems
        count = min(count, limit) if limit is not None else count
        df = make_problems(count, seed=seed, min_steps=min_steps, max_steps=max_steps)
        return df, f"embedded(seed={seed}, steps {min_steps}-{max_steps})"
    if data in KNOWN_SETS or f"{data}:{split}" in KNOWN_SETS:
        if ":" in data:
            name = data
        elif f"{data}:{split}" in KNOWN_SETS:
            name = f"{data}:{split}"
        elif split == "test":
            name = data  # a set with one split, evaluated as its test split
        else:
            raise ValueError(f"data set {data!r} has no split {split!r}; it has one split (use --split test)")
        return load_problems(name, limit=limit, data_dir=data_dir), name
    path = Path(data)
    if path.suffix == ".parquet" and path.exists() and read_metadata(path).get("kind") == "problems":
        df = read_table(path, kind="problems")
        return (df.head(limit) if limit is not None else df).reset_index(drop=True), str(path)
    return load_problems(path, columns=columns, limit=limit, data_dir=data_dir), str(path)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn from n (c of them correct) is correct (unbiased)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, not {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def vote_key(answer: str) -> Any:
    """Answers that are the same plain number vote together (14, 14.0, $14); others by their text."""
    number = parse_plain_number(answer)
    if number is not None:
        return ("number", number.value, number.is_percent)
    return ("text", re.sub(r"\s+", "", answer))


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool | None]) -> bool:
    """Whether the most common stated answer (first seen wins a tie) was judged correct."""
    votes: Counter = Counter()
    first: dict[Any, int] = {}
    for index, answer in enumerate(answers):
        if answer is None or (isinstance(answer, float) and math.isnan(answer)):
            continue
        key = vote_key(str(answer))
        votes[key] += 1
        first.setdefault(key, index)
    if not votes:
        return False
    winner = max(votes, key=lambda key: (votes[key], -first[key]))
    return correct[first[winner]] is True


@dataclass
class EvalResult:
    """One model's score on one problem set; ``rows`` has one row per (problem, sample)."""

    model: str
    backend: str
    data: str
    template: str
    sampling: dict[str, Any]
    problems: int
    samples: int
    correct: int
    judged: int
    errors: int
    accuracy: float | None  # correct / samples: an error counts as not correct
    accuracy_judged: float | None  # correct / judged samples
    pass_at_k: dict[str, float]
    maj_at_n: float | None
    truncated: int  # samples that hit max_tokens
    error_kinds: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time: loading, generation, answer checks
    generate_seconds: float
    rows: pd.DataFrame = field(repr=False)
    # calculator decoding (None without it): results the calculator gave, and how many the model had wrong
    calculator_calls: int | None = None
    calculator_changed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rows"}


def _error_rows(model: str, problems: pd.DataFrame, n: int, error: str) -> pd.DataFrame:
    """Rows for problems that produced nothing (the model or a whole batch failed)."""
    return pd.DataFrame([{"problem_id": str(p.problem_id), "rollout_id": f"{p.problem_id}:{i}", "prompt": "",
                          "model": model, "error": error} for p in problems.itertuples() for i in range(n)])


def _summarize(model: str, backend: str, data: str, template: str, sampling: SamplingConfig, rows: pd.DataFrame,
               problems: int, seconds: float, generate_seconds: float) -> EvalResult:
    correct = rows["correct"].fillna(False).astype(bool)
    judged = rows["correct"].notna()
    per_problem = rows.assign(ok=correct).groupby("problem_id", sort=False)
    counts = per_problem["ok"].agg(["size", "sum"])
    ks = sorted({1, sampling.n})
    passes = {f"pass@{k}": round(sum(pass_at_k(int(r["size"]), int(r["sum"]), k) for _, r in counts.iterrows())
                                 / len(counts), 4) for k in ks} if len(counts) else {}
    maj = None
    if sampling.n > 1 and len(counts):
        maj = round(sum(majority_correct(g["pred_answer"].tolist(), g["correct"].tolist())
                        for _, g in per_problem) / len(counts), 4)
    errors = rows["error"].dropna()
    return EvalResult(
        model=model, backend=backend, data=data, template=template, sampling=sampling.as_record(),
        problems=problems, samples=len(rows), correct=int(correct.sum()), judged=int(judged.sum()),
        errors=len(errors),
        accuracy=round(float(correct.mean()), 4) if len(rows) else None,
        accuracy_judged=round(float(correct[judged].mean()), 4) if judged.any() else None,
        pass_at_k=passes, maj_at_n=maj,
        truncated=int((rows["finish_reason"] == "length").sum()),
        error_kinds=dict(Counter(e.split(":", 1)[0] for e in errors)),
        prompt_tokens=int(rows.drop_duplicates("problem_id")["prompt_tokens"].fillna(0).sum()),
        completion_tokens=int(rows["completion_tokens"].fillna(0).sum()),
        seconds=round(seconds, 2), generate_seconds=round(generate_seconds, 2), rows=rows,
        **_calculator_totals(rows),
    )


def _calculator_totals(rows: pd.DataFrame) -> dict[str, int | None]:
    """The summary's ``calculator_calls`` and ``calculator_changed``: summed over the samples (None: off)."""
    from stepdata.generation.calculator_decoding import calculator_summary

    summary = calculator_summary(list(rows["calculator_calls"]), list(rows["calculator_changed"]))
    if summary is None:
        return {"calculator_calls": None, "calculator_changed": None}
    return {"calculator_calls": summary["calls"], "calculator_changed": summary["changed"]}


def evaluate_model(
    model: str | Generator,
    problems: pd.DataFrame,
    *,
    backend: str = "auto",
    template: str = "step_by_step",
    sampling: SamplingConfig = GREEDY,
    data: str = "problems",
    engine_options: dict[str, Any] | None = None,
    make_engine: Callable[[str], Generator] | None = None,
    answer_timeout: float = 5.0,
    batch_size: int | None = None,
    last_number_fallback: bool = False,
) -> EvalResult:
    """Score ``model`` (a model folder or served name, or a ready :class:`Generator`) on ``problems``.

    ``make_engine(model)`` builds the generator when given (the CLI's engine options);
    otherwise ``make_generator(backend, model, **engine_options)`` does. Greedy by
    default (n=1, temperature 0); with ``sampling.n > 1`` accuracy is the
    mean over samples, and pass@n and maj@n are reported too. ``batch_size``
    problems go to the engine at a time (all at once by default: best for vLLM); a
    batch that raises becomes error rows and the next batch goes on. Answers are read and
    judged by stage 1's answer policy: a sample cut at ``max_tokens`` is never correct, and
    an answer counts only when stated explicitly unless ``last_number_fallback``.
    """
    from stepdata.pipeline.sample import SampleConfig, SampleStage

    if problems["problem_id"].astype(str).duplicated().any():
        raise ValueError("problem ids must be unique")
    problems = problems.reset_index(drop=True)
    config = SampleConfig(template=template, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                          max_tokens=sampling.max_tokens, seed=sampling.seed, answer_timeout=answer_timeout,
                          last_number_fallback=last_number_fallback, calculator=sampling.calculator)
    start = time.perf_counter()
    owned = isinstance(model, str)
    label = model if owned else model.model
    parts: list[pd.DataFrame] = []
    generate_seconds = 0.0
    try:
        if not owned:
            generator = model
        elif make_engine is not None:
            generator = make_engine(model)
        else:
            generator = make_generator(backend, model, **(engine_options or {}))
    except Exception as exc:  # noqa: BLE001 - a model that does not load is every row's error, not a crash
        log.error("model %s did not load: %s", label, exc)
        generator, resolved = None, backend
        parts.append(_error_rows(label, problems, sampling.n, f"load: {type(exc).__name__}: {exc}"))
    if generator is not None:
        resolved = generator.backend
        try:
            stage = SampleStage(generator, config)
            stage.sampling = sampling  # keeps what SampleConfig has no field for (stop strings, logprobs)
            step = batch_size or max(len(problems), 1)
            for first in range(0, len(problems), step):
                chunk = problems.iloc[first : first + step]
                try:
                    parts.append(stage(chunk))
                except Exception as exc:  # noqa: BLE001 - e.g. an engine crash: these rows fail, the rest go on
                    log.error("a batch of %d problems failed: %s", len(chunk), exc)
                    parts.append(_error_rows(label, chunk, sampling.n, f"generation: {type(exc).__name__}: {exc}"))
            generate_seconds = stage.totals["generate_seconds"]
        finally:
            if owned:
                generator.close()
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["problem_id", "rollout_id"])
    info = problems[["problem_id", "source", "answer"]].assign(problem_id=problems["problem_id"].astype(str))
    rows = rows.merge(info.rename(columns={"answer": "gold"}), on="problem_id", how="left")
    rows["sample"] = rows["rollout_id"].str.rsplit(":", n=1).str[1].astype(int)
    rows["model"] = label
    rows = rows.reindex(columns=ROW_COLUMNS)
    rows["correct"] = rows["correct"].astype("boolean")
    for column in ("prompt_tokens", "completion_tokens", "calculator_calls", "calculator_changed"):
        rows[column] = rows[column].astype("Int64")
    return _summarize(label, resolved, data, template, sampling, rows, len(problems),
                      time.perf_counter() - start, generate_seconds)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(results: Sequence[EvalResult]) -> str:
    """One line per model: data, problems, accuracy (and pass@n / maj@n), errors, tokens, seconds."""
    sampled = any(r.sampling["n"] > 1 for r in results)
    header = ["model", "data", "problems", "accuracy"]
    header += ["pass@n", "maj@n"] if sampled else []
    header += ["vs first"] if len(results) > 1 else []
    header += ["errors", "truncated", "tokens", "seconds"]
    lines = []
    for result in results:
        line = [result.model, result.data, str(result.problems), _pct(result.accuracy)]
        if sampled:
            line += [_pct(result.pass_at_k.get(f"pass@{result.sampling['n']}")), _pct(result.maj_at_n)]
        if len(results) > 1:
            base, now = results[0].accuracy, result.accuracy
            line += ["-" if base is None or now is None else f"{100 * (now - base):+.1f}"]
        line += [str(result.errors), str(result.truncated), str(result.completion_tokens), f"{result.seconds:.1f}"]
        lines.append(line)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in [header, *lines]]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def write_results(results: Sequence[EvalResult], out: str | Path, config: dict[str, Any] | None = None) -> Path:
    """``out/eval.json`` (config and every model's summary) and ``out/NN-<model>.parquet`` (its rows)."""
    import json

    import stepdata
    from stepdata.io import atomic_path, write_text_atomic
    from stepdata.secrets import scrub_failed_rows, scrub_object

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for index, result in enumerate(results):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(result.model.rstrip("/")).name or "model")[:60]
        rows_file = f"{index:02d}-{slug}.parquet"
        with atomic_path(out / rows_file) as tmp:
            scrub_failed_rows(result.rows).to_parquet(tmp, index=False)
        summaries.append(result.as_dict() | {"rows_file": rows_file})
    path = out / "eval.json"
    report = {"stepdata_version": stepdata.__version__, "config": config or {}, "results": summaries}
    return write_text_atomic(path, json.dumps(scrub_object(report), indent=2, default=str) + "\n")
