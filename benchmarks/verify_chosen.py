"""How chosen-step verifiers judge a finished run's chosen steps, against the exact checker.

Every chosen step of a pairs table (default: the quickstart's Step-DPO pairs; SCDPO pairs give
the first step of their chosen side; DPO pairs have no step and are left out) is checked by each
verifier named, exactly as ``rectify --verify METHOD`` checks it (stepdata.pipeline.verify: the
prefix plus the chosen step, a partial solution, one ``locate`` call for all of them). The exact
checker (each step against the gold steps of an embedded problem) is the reference.

Printed (markdown; ``--json`` also writes it): per verifier the pairs checked, accepted / rejected
/ undecided (undecided split: prefix doubted, unknown, failed), agreement with the exact checker
on the steps both decided (percent, Cohen's kappa, and the confusion counts: verifier
accept/reject by exact accept/reject), calls, tokens and seconds.

    python benchmarks/verify_chosen.py [--pairs runs/quickstart/pairs_stepdpo.parquet] [--problems P]
        [--verifiers exact,rules,judge,prm] [--judge-model M --judge-backend B [--judge-base-url U]]
        [--prm-model P] [--option judge.votes=3 ...] [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chosen_steps(pairs: Any) -> list[Any]:
    """The chosen step of every Step-DPO and SCDPO pair, with its prefix (DPO pairs have no step)."""
    from stepdata.pipeline.verify import ChosenStep
    from stepdata.steps import split_steps

    steps = []
    for pair in pairs.itertuples():
        if pair.kind == "dpo" or pair.error_step is None:
            continue
        chosen = pair.chosen if pair.kind == "step-dpo" else (split_steps(pair.chosen) or [pair.chosen])[0]
        steps.append(ChosenStep(pair.pair_id, pair.problem_id, list(pair.prefix_steps), chosen))
    return steps


def kappa(confusion: dict[str, int]) -> float | None:
    """Cohen's kappa of two raters' accept/reject on the same items (None when chance agreement is total)."""
    n = sum(confusion.values())
    if not n:
        return None
    observed = (confusion["accept_accept"] + confusion["reject_reject"]) / n
    yes_a = (confusion["accept_accept"] + confusion["accept_reject"]) / n
    yes_b = (confusion["accept_accept"] + confusion["reject_accept"]) / n
    chance = yes_a * yes_b + (1 - yes_a) * (1 - yes_b)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


def compare(verdicts: list[Any], reference: list[Any]) -> dict[str, Any]:
    """Counts of one verifier's verdicts and its agreement with the reference where both decided."""
    confusion = {"accept_accept": 0, "accept_reject": 0, "reject_accept": 0, "reject_reject": 0}
    for mine, truth in zip(verdicts, reference):
        if mine.verified is None or truth.verified is None:
            continue
        key = f"{'accept' if mine.verified else 'reject'}_{'accept' if truth.verified else 'reject'}"
        confusion[key] += 1
    both = sum(confusion.values())
    agree = confusion["accept_accept"] + confusion["reject_reject"]
    reasons = {r: sum(v.reason == r for v in verdicts) for r in ("prefix_doubted", "unknown", "failed")}
    return {"pairs": len(verdicts), "accepted": sum(v.verified is True for v in verdicts),
            "rejected": sum(v.verified is False for v in verdicts),
            "undecided": sum(v.verified is None for v in verdicts), "undecided_reasons": reasons,
            "decided_by_both": both, "agreement": agree / both if both else None, "kappa": kappa(confusion),
            "confusion": confusion, "calls": sum(v.calls for v in verdicts), "tokens": sum(v.tokens for v in verdicts)}


def run_verifier(name: str, steps: list[Any], problems: Any, options: tuple[str, ...],
                 engine: dict[str, Any]) -> tuple[list[Any], float]:
    """One verifier over all steps, as a pair stage runs it; a model-based one gets its own engine."""
    from stepdata.pipeline.verify import ChosenVerifier, VerifySettings

    settings = VerifySettings(verify=name, verify_options=options,
                              **(engine if "generator" in _takes(name) else {}))
    generator = None
    if settings.verifier_uses_model():
        if settings.verify_engine() is None:
            raise SystemExit(f"verifier {name!r} samples from a model: give --judge-model (and --judge-backend)")
        generator = settings.verify_engine().build()
    try:
        verifier = ChosenVerifier(settings, problems, (lambda: generator) if generator is not None else None)
        start = time.perf_counter()
        verdicts = verifier.check(steps)
        return verdicts, time.perf_counter() - start
    finally:
        if generator is not None:
            generator.close()


def _takes(name: str) -> set[str]:
    """The options among the stage's that ``name``'s factory takes (auto, none and unknown names: none)."""
    from stepdata.localize import available_localizers, options_for

    return set(options_for(name, {"generator": None})) if name in available_localizers() else set()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = ["| verifier | pairs | accepted | rejected | undecided (prefix / unknown / failed) | agree with exact "
             "(of both decided) | kappa | confusion acc/acc, acc/rej, rej/acc, rej/rej | calls | tokens | seconds |",
             "|" + "---|" * 11]
    for name, r in rows.items():
        c, u = r["confusion"], r["undecided_reasons"]
        k = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
        lines.append(f"| {name} | {r['pairs']} | {r['accepted']} | {r['rejected']} | {r['undecided']} "
                     f"({u['prefix_doubted']} / {u['unknown']} / {u['failed']}) | {_percent(r['agreement'])} "
                     f"({r['decided_by_both']}) | {k} | {c['accept_accept']}, {c['accept_reject']}, "
                     f"{c['reject_accept']}, {c['reject_reject']} | {r['calls']} | {r['tokens']} | "
                     f"{r['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="runs/quickstart/pairs_stepdpo.parquet", help="a pairs table")
    parser.add_argument("--problems", help="its problems table (default: problems.parquet beside it)")
    parser.add_argument("--verifiers", default="exact,rules", help="comma-separated: exact, rules, judge, prm, ...")
    parser.add_argument("--judge-model", help="the model a model-based verifier (judge) samples from")
    parser.add_argument("--judge-backend", help="its backend: vllm, openai, hf, auto (default: openai with "
                                                "--judge-base-url, else auto)")
    parser.add_argument("--judge-base-url", help="OpenAI-compatible server of the judge (key from $OPENAI_API_KEY)")
    parser.add_argument("--judge-engine-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--prm-model", help="the prm verifier's model (its prm_model option)")
    parser.add_argument("--option", action="append", default=[], metavar="VERIFIER.KEY=VALUE",
                        help="an option of one verifier, e.g. judge.votes=3 or prm.threshold=0.5 (repeatable)")
    parser.add_argument("--plugin", action="append", default=[], help="a module registering more localizers")
    parser.add_argument("--limit", type=int, help="check only the first N chosen steps")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from stepdata.io import read_table
    from stepdata.localize import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    pairs_path = Path(args.pairs)
    pairs = read_table(pairs_path, kind="pairs")
    problems_path = Path(args.problems) if args.problems else pairs_path.with_name("problems.parquet")
    problems = read_table(problems_path, kind="problems").drop_duplicates("problem_id").set_index("problem_id")
    steps = chosen_steps(pairs)[: args.limit]
    options: dict[str, list[str]] = {}
    for item in args.option:
        name, _, option = item.partition(".")
        options.setdefault(name, []).append(option)
    if args.prm_model:
        options.setdefault("prm", []).append(f"prm_model={args.prm_model}")
    engine = {k: v for k, v in {"verify_model": args.judge_model, "verify_backend": args.judge_backend,
                                "verify_base_url": args.judge_base_url,
                                "verify_engine_options": tuple(args.judge_engine_option)}.items() if v}

    reference, seconds = run_verifier("exact", steps, problems, (), {})
    results: dict[str, dict[str, Any]] = {}
    for name in [v.strip() for v in args.verifiers.split(",") if v.strip()]:
        if name == "exact":
            verdicts, took = reference, seconds
        else:
            verdicts, took = run_verifier(name, steps, problems, tuple(options.get(name, [])), engine)
        results[name] = compare(verdicts, reference) | {"seconds": took}
    print(f"{len(steps)} chosen steps of {pairs_path} ({problems_path}); reference: the exact checker")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": str(pairs_path), "problems": str(problems_path),
                                               "chosen_steps": len(steps), "verifiers": results}, indent=1))


if __name__ == "__main__":
    main()
