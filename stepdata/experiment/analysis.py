"""From finished units to the experiment's numbers: accuracies with intervals, paired tests, diagnostics.

Per arm and set, a problem's score is its correctness (greedy; or maj@k's majority
answer) averaged over the arm's training seeds, so an arm with 3 seeds scores 0,
1/3, 2/3 or 1 on a problem. The interval is a bootstrap over problems of the mean
score; the spread over seeds is shown beside it (with 3 seeds an interval over seeds
would mean little). A comparison pairs two arms problem by problem
(:func:`stepdata.experiment.stats.compare`). Units that are not finished are left
out and listed, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepdata.experiment import stats
from stepdata.experiment.arms import ARMS

START = "start"  # the start policy's id among the arms of a table


def problem_scores(rows: pd.DataFrame, order: list[str], majority: bool) -> pd.Series:
    """One score per problem of ``order``: greedy correctness, or whether the majority answer is correct;
    an error or a missing row counts 0 (an evaluation never drops a problem)."""
    from stepdata.evaluate import majority_correct

    rows = rows.assign(problem_id=rows["problem_id"].astype(str))
    if majority:
        by_problem = {pid: float(majority_correct(g["pred_answer"].tolist(),
                                                  [bool(c) if pd.notna(c) else None for c in g["correct"]]))
                      for pid, g in rows.groupby("problem_id", sort=False)}
    else:
        first = rows.sort_values("sample").drop_duplicates("problem_id")
        by_problem = dict(zip(first["problem_id"], first["correct"].fillna(False).astype(bool).astype(float)))
    return pd.Series([by_problem.get(pid, 0.0) for pid in order], index=order, dtype=float)


def _log(report: dict[str, Any]) -> list[dict[str, Any]]:
    if report.get("log"):
        return list(report["log"])
    return [entry for stage in report.get("stages") or [] for entry in stage.get("log") or []]


def _data(report: dict[str, Any]) -> dict[str, Any]:
    if report.get("data"):
        return report["data"]
    stages = [s["data"] for s in report.get("stages") or [] if s.get("data")]
    return {"rows_out": sum(d["rows_out"] for d in stages), "dropped": sum(d["dropped"] for d in stages)}


def training_diagnostics(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """What a DPO training did, from its train_report.json (several: sDPO's stages are in one, DPO-ST's
    iterations are one each): the chosen-over-rejected margin (as TRL logs it, beta times the log-ratio margin,
    and divided by beta so arms with other betas compare), reward accuracy, and how far the policy moved from
    the reference on the training pairs (the mean log-ratio of chosen and of rejected sides: a drift measured
    on the pairs, not a KL under the policy's own samples), over the last quarter of the steps."""
    log = [entry for report in reports for entry in _log(report)]
    hyper = (reports[-1].get("hyperparameters") or {}) if reports else {}
    beta = hyper.get("beta") or None
    datas = [_data(report) for report in reports]
    data = {"rows_out": sum(d.get("rows_out") or 0 for d in datas) or None,  # over sDPO's stages, DPO-ST's iterations
            "dropped": sum(d.get("dropped") or 0 for d in datas)}
    steps = len(log)
    tail = log[-max(1, steps // 4):] if log else []

    def mean(key: str) -> float | None:
        values = [e[key] for e in tail if isinstance(e.get(key), (int, float))]
        return round(float(np.mean(values)), 5) if values else None

    margin = mean("rewards/margins")
    chosen, rejected = mean("rewards/chosen"), mean("rewards/rejected")
    batch = hyper.get("effective_batch_size") or hyper.get("per_device_train_batch_size")
    rows_out = data.get("rows_out")
    return {
        "optimizer_steps": steps, "beta": beta, "pairs_trained_on": rows_out, "pairs_left_out": data.get("dropped"),
        "pairs_seen": steps * batch if batch else None,
        "epochs": round(steps * batch / rows_out, 2) if batch and rows_out else None,
        "final_loss": mean("loss"), "margin": margin,
        "margin_per_beta": round(margin / beta, 5) if margin is not None and beta else None,
        "reward_accuracy": mean("rewards/accuracies"),
        "logratio_chosen": round(chosen / beta, 5) if chosen is not None and beta else None,
        "logratio_rejected": round(rejected / beta, 5) if rejected is not None and beta else None,
        "seconds": round(sum(report.get("seconds") or 0 for report in reports), 1),
        "margins_per_beta": [round(e["rewards/margins"] / beta, 5) if beta and "rewards/margins" in e else None
                             for e in log],
    }


def first_error_buckets(rows: pd.DataFrame, problems: pd.DataFrame) -> pd.Series:
    """For each problem, where the start policy first erred on it (greedy): "right", "step k" (from 1, by the
    exact check against the gold steps), or "other" (cut off, or no step found wrong)."""
    from stepdata.localize.exact import exact_first_error
    from stepdata.steps import split_steps

    meta = dict(zip(problems["problem_id"].astype(str), problems["meta"]))
    first = rows.assign(problem_id=rows["problem_id"].astype(str)).sort_values("sample").drop_duplicates("problem_id")
    buckets = {}
    for row in first.itertuples():
        if pd.notna(row.correct) and bool(row.correct):
            buckets[row.problem_id] = "right"
            continue
        text = row.completion if isinstance(row.completion, str) else ""
        found = exact_first_error(split_steps(text), meta.get(row.problem_id), finished=row.finish_reason != "length")
        buckets[row.problem_id] = f"step {found.error_step + 1}" if found.status == "error" else "other"
    order = problems["problem_id"].astype(str).tolist()
    return pd.Series([buckets.get(p, "other") for p in order], index=order)


def _bucket_order(labels: set[str]) -> list[str]:
    steps = sorted((label for label in labels if label.startswith("step ")), key=lambda s: int(s.split()[1]))
    return (["right"] if "right" in labels else []) + steps + (["other"] if "other" in labels else [])


def analyze(out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Every table of the report from the finished units described by ``plan`` (see :mod:`.runner`)."""
    from stepdata.io import read_table

    resamples, eval_dir = plan["bootstrap"], out / "eval"
    sets = plan["eval_sets"]
    order = {name: read_table(info["path"], kind="problems")["problem_id"].astype(str).tolist()
             for name, info in sets.items()}
    scores: dict[tuple[str, str, str], dict[int | None, pd.Series]] = {}
    missing: list[str] = []
    for model in plan["models"]:
        for name in sets:
            record_path = eval_dir / f"{model['id']}-{name}.json"
            if not record_path.exists():
                missing.append(f"{model['id']} on {name}")
                continue
            result = json.loads(record_path.read_text())["result"]
            metrics = [("greedy", result["rows"], False)] + ([("maj", result["maj_rows"], True)]
                                                             if "maj_rows" in result else [])
            for metric, file, majority in metrics:
                values = problem_scores(pd.read_parquet(eval_dir / file), order[name], majority)
                scores.setdefault((model["arm"], name, metric), {})[model["seed"]] = values

    results, per_problem = [], {}
    for (arm, name, metric), by_seed in scores.items():
        matrix = pd.concat(by_seed.values(), axis=1)
        mean = matrix.mean(axis=1)
        per_problem[(arm, name, metric)] = mean
        seed_acc = {str(seed): round(float(v.mean()), 4) for seed, v in by_seed.items()}
        results.append({"arm": arm, "set": name, "metric": metric, "problems": len(mean),
                        "seeds": [s for s in by_seed if s is not None], "accuracy": round(float(mean.mean()), 4),
                        "ci95": stats.accuracy_interval(mean.to_numpy(), resamples=resamples),
                        "seed_accuracies": seed_acc,
                        "seed_sd": round(float(np.std(list(seed_acc.values()), ddof=1)), 4) if len(seed_acc) > 1
                        else None})

    comparisons = []
    for (arm, name, metric), values in per_problem.items():
        if arm == START:
            continue
        against = [a for a in (*ARMS[arm].compare_to, START) if a != arm]
        for other in against:
            base = per_problem.get((other, name, metric))
            if base is None:
                continue
            test = stats.compare(values.to_numpy(), base.to_numpy(), resamples=resamples)
            comparisons.append({"arm": arm, "against": other, "set": name, "metric": metric,
                                "problems": len(values), **test})

    diagnostics = []
    for model in plan["models"]:
        if model["arm"] == START:
            continue
        entry = {"arm": model["arm"], "seed": model["seed"], "status": model.get("status"),
                 "chosen_confirmed": model.get("chosen_confirmed"), "pairs_in_file": model.get("pairs_in_file")}
        reports = [json.loads(Path(path).read_text()) for path in model.get("reports") or [] if Path(path).exists()]
        if reports:
            entry |= training_diagnostics(reports)
        diagnostics.append(entry)

    by_first_error: dict[str, Any] = {}
    for name, info in sets.items():
        rows_file = eval_dir / f"{START}-{name}.parquet"
        if not info.get("has_gold_steps") or not rows_file.exists():
            continue
        buckets = first_error_buckets(pd.read_parquet(rows_file), read_table(info["path"], kind="problems"))
        labels = _bucket_order(set(buckets))
        table = {"buckets": labels, "problems": {b: int((buckets == b).sum()) for b in labels}, "arms": {}}
        for (arm, set_name, metric), values in per_problem.items():
            if set_name == name and metric == "greedy":
                table["arms"][arm] = [round(float(values[buckets == b].mean()), 4) for b in labels]
        by_first_error[name] = table
    return {"results": results, "comparisons": comparisons, "diagnostics": diagnostics,
            "by_first_error": by_first_error, "missing": missing}
