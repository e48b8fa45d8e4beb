"""``run_experiment``: checks, the data build, every arm's training and every evaluation, then the report.

The order: everything that can be checked without work is checked first (the
arms can run here, the evaluation sets are known and their files are there, the
start policy exists, no finished unit in the output folder was made with other
settings), so a typo fails in a second rather than after an hour. Then the data
build; the evaluation of the start policy; per arm and seed, training and then its
evaluation; finally the analysis and the outputs, written from whatever is finished
(a run stopped early still leaves its units, and the next run finishes them).

Layout of ``OUT``::

    data/            the one data build (stage tables, pairs.parquet, pairs/<arm's pairs>.parquet, eval/<set>.parquet)
    arms/<arm>/seed<k>/model/       the trained model (train_report.json inside)
    arms/<arm>/seed<k>/train.json   the unit's record (settings, outcome, seconds)
    eval/<model>-<set>.parquet|.maj.parquet|.json   rows and record of one evaluation (<model>: start, <arm>-seed<k>)
    experiment.json, tables/, report.html
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepdata.experiment.arms import ARMS
from stepdata.experiment.config import ExperimentConfig
from stepdata.experiment.data import build_data, data_changes, start_model_id
from stepdata.experiment.eval_sets import (
    check_eval_sets,
    load_eval_set,
    write_eval_problems,
)
from stepdata.experiment.evaluation import eval_settings, evaluate_model_sets, unit_name
from stepdata.experiment.training import run_training, train_settings
from stepdata.experiment.units import changed, read_record, refuse_changes


class ExperimentError(ValueError):
    """An experiment that cannot start as configured; the message lists every reason."""


def policy_key(config: ExperimentConfig) -> dict[str, Any]:
    """What identifies the policy every arm starts from: the start model and its SFT warm-up, if any."""
    return {"start": start_model_id(config), "sft_steps": config.sft_steps,
            **({"sft_problems": config.sft_problems, "sft_learning_rate": config.sft_learning_rate}
               if config.sft_steps else {})}


def _pairs_key(data: dict[str, Any], arm: str) -> dict[str, Any] | None:
    info = (data.get("arm_pairs") or {}).get(ARMS[arm].pairs)
    return None if info is None else {"rows": info["rows"], "fingerprint": info["fingerprint"]}


def _eval_fingerprints(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    from stepdata.pipeline.run import table_fingerprint

    return {name: table_fingerprint(load_eval_set(name, config)[1]) for name in config.eval_sets}


def stale_units(config: ExperimentConfig, out: Path) -> list[str]:
    """Every finished unit in ``out`` that this config would make differently (named, with the settings)."""
    reasons = data_changes(config, out / "data")
    data = read_record(out / "data" / "build.json")
    if reasons or data is None:
        return reasons
    data = data["result"]
    fingerprints = _eval_fingerprints(config)
    policy = policy_key(config)
    for name, fingerprint in fingerprints.items():
        reason = changed(out / "eval" / f"{unit_name('start', name)}.json",
                         eval_settings(config, "start", policy, name, fingerprint), f"evaluation start on {name}")
        reasons += [reason] if reason else []
    for arm in config.arms:
        for seed in config.seeds_of(arm):
            settings = train_settings(config, ARMS[arm], seed, policy, _pairs_key(data, arm))
            reason = changed(out / "arms" / arm / f"seed{seed}" / "train.json", settings, f"{arm} seed {seed}")
            reasons += [reason] if reason else []
            for name, fingerprint in fingerprints.items():
                model_id = f"{arm}-seed{seed}"
                reason = changed(out / "eval" / f"{unit_name(model_id, name)}.json",
                                 eval_settings(config, model_id, settings, name, fingerprint),
                                 f"evaluation {model_id} on {name}")
                reasons += [reason] if reason else []
    return reasons


def check_experiment(config: ExperimentConfig) -> list[str]:
    """Why ``config`` cannot run here (empty when it can), found without doing any of its work."""
    from importlib.util import find_spec

    from stepdata.models import MODELS

    reasons = check_eval_sets(config)
    if config.model not in MODELS and not (Path(config.model) / "config.json").exists():
        reasons.append(f"model {config.model!r} is neither a model folder (with config.json) nor one of "
                       f"{sorted(MODELS)}; the default is the quickstart's warmed-up policy: run "
                       "`stepdata quickstart --out runs/quickstart` first, or give --set model=DIR")
    if "sdpo" in config.arms and config.steps < ARMS["sdpo"].stages:
        reasons.append(f"steps ({config.steps}) must be at least {ARMS['sdpo'].stages} for sdpo's stages")
    if "dpo_st" in config.arms:
        from stepdata.experiment.training import dpo_st_config

        try:
            dpo_st_config(config, config.seeds[0])
        except ValueError as exc:  # SettingError included: an option the loop refuses, named
            reasons.append(f"arm dpo_st: {exc}")
    if find_spec("trl") is None or find_spec("torch") is None:
        reasons.append("training needs the train extra (torch, trl, peft): bash setup.sh")
    return reasons


def plan_of(config: ExperimentConfig, out: Path, data: dict[str, Any], sets: dict[str, dict[str, Any]]) -> dict:
    """Which models and sets the tables cover, with each model's unit outcome so far."""
    models: list[dict[str, Any]] = [{"id": "start", "arm": "start", "seed": None, "path": data.get("policy"),
                                     "status": "start"}]
    for arm in config.arms:
        info = (data.get("arm_pairs") or {}).get(ARMS[arm].pairs) or {}
        for seed in config.seeds_of(arm):
            unit = out / "arms" / arm / f"seed{seed}"
            record = read_record(unit / "train.json")
            result = record["result"] if record else {}
            # the DPO trainings' reports: the arm's model, or DPO-ST's DPO step of every iteration
            reports = (sorted((unit / "selftrain").glob("iter*/model-dpo/train_report.json")) if ARMS[arm].selftrain
                       else [Path(result["model"]) / "train_report.json"] if result.get("model") else [])
            models.append({"id": f"{arm}-seed{seed}", "arm": arm, "seed": seed, "path": result.get("model"),
                           "reports": [str(p) for p in reports],
                           "status": result.get("status", "not trained yet"),
                           "chosen_confirmed": info.get("chosen_confirmed"), "pairs_in_file": info.get("pairs")})
    return {"arms": list(config.arms), "eval_sets": sets, "models": models, "bootstrap": config.bootstrap}


def _units_seconds(out: Path, plan: dict[str, Any], data: dict[str, Any]) -> dict[str, float]:
    training = evaluation = 0.0
    for model in plan["models"]:
        if model["arm"] != "start":
            record = read_record(out / "arms" / model["arm"] / f"seed{model['seed']}" / "train.json")
            training += float((record or {}).get("result", {}).get("seconds") or 0)
        for name in plan["eval_sets"]:
            record = read_record(out / "eval" / f"{unit_name(model['id'], name)}.json")
            evaluation += float((record or {}).get("result", {}).get("seconds") or 0)
    data_seconds = float(data.get("seconds") or 0)
    return {"data": round(data_seconds, 1), "training": round(training, 1), "evaluation": round(evaluation, 1),
            "total": round(data_seconds + training + evaluation, 1)}


def run_experiment(config: ExperimentConfig, out: str | Path, echo: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; returns the model card written to ``out/experiment.json``."""
    from stepdata.experiment.analysis import analyze
    from stepdata.experiment.report import machine, now, reading, write_outputs
    from stepdata.pipeline.run import table_fingerprint

    out = Path(out)
    start = time.monotonic()
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))

    def log(line: str) -> None:
        say(f"[experiment {time.monotonic() - start:6.0f}s] {line}")

    reasons = check_experiment(config)
    if reasons:
        raise ExperimentError("the experiment cannot start:\n  " + "\n  ".join(reasons))
    refuse_changes(stale_units(config, out))
    out.mkdir(parents=True, exist_ok=True)

    data = build_data(config, out / "data", log)
    policy = policy_key(config)
    sets: dict[str, dict[str, Any]] = {}
    for name in config.eval_sets:
        described, path, problems = write_eval_problems(name, config, out / "data" / "eval")
        sets[name] = {"path": str(path), "description": described.description,
                      "has_gold_steps": described.has_gold_steps, **table_fingerprint(problems)}
    fingerprints = {name: {"rows": info["rows"], "fingerprint": info["fingerprint"]} for name, info in sets.items()}
    targets = {name: (Path(info["path"]), fingerprints[name]) for name, info in sets.items()}
    evaluate_model_sets(config, "start", data["policy"], policy, targets, out / "eval", log)
    for arm in config.arms:
        for seed in config.seeds_of(arm):
            unit = out / "arms" / arm / f"seed{seed}"
            record = run_training(config, ARMS[arm], seed, unit, out / "data", policy, data["policy"],
                                  _pairs_key(data, arm), log)
            if record["result"]["status"] == "trained":
                evaluate_model_sets(config, f"{arm}-seed{seed}", record["result"]["model"], record["settings"],
                                    targets, out / "eval", log)

    plan = plan_of(config, out, data, sets)
    analysis = analyze(out, plan)
    card = {
        "what": "stepdata experiment: does step-level preference data make the policy better?",
        "stepdata_version": __import__("stepdata").__version__, "created": now(), "machine": machine(),
        "settings": config.record(), "start_policy": {"path": data["policy"], **policy},
        "data": data, "eval_sets": sets,
        "arms": {arm: {"title": ARMS[arm].title, "source": ARMS[arm].source, "method": ARMS[arm].method,
                       "pairs": ARMS[arm].pairs, "kinds": list(ARMS[arm].kinds), "stages": ARMS[arm].stages,
                       "compare_to": list(ARMS[arm].compare_to),
                       "seeds": {str(m["seed"]): {"status": m["status"], "model": m["path"]}
                                 for m in plan["models"] if m["arm"] == arm}}
                 for arm in config.arms},
        **analysis,
    }
    card["reading"] = reading(analysis)
    card["timing"] = {"this_run_seconds": round(time.monotonic() - start, 1),
                      "units_seconds": _units_seconds(out, plan, data)}
    write_outputs(out, card, plan, analysis)
    log(f"done: {out / 'report.html'}, {out / 'experiment.json'}")
    return card
