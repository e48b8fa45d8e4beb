"""StepCo against greedy and best-of-N: accuracy (95% CI) against generated tokens per problem.

Runs (each one `stepdata solve` run over the same problems with one engine, its table written to
``OUT/RUN.parquet``, so a stopped benchmark resumes where it was and a finished run is not redone):

- ``greedy``;
- ``sampled-N``: N = the largest of ``--best-of`` samples per problem; best-of-k for every k of
  ``--best-of`` is read from each problem's first k samples (:mod:`stepdata.solve.rescore`), picked by
  majority vote and by each verifier of ``--bon-verifiers`` (default: the StepCo verifiers), so best-of-N
  and StepCo are compared with the same verifier;
- ``stepco-V`` for each verifier V of ``--stepco-verifiers`` (default exact,rules), revision
  ``--revision`` (continue), at most ``--max-iterations`` revisions;
- with ``--prm-model DIR``: best-of-N and StepCo with that PRM as verifier on the first ``--prm-problems``
  problems (a tiny random PRM shows the path works; its accuracy means nothing).

Printed (markdown; ``OUT/stepco.json`` has it all): per arm the accuracy, its 95% Wilson interval, policy /
verifier / total tokens per problem, mean revisions and seconds; for StepCo how revisions went (how often
the revised step was rejected again, rewritten word for word, ...). ``OUT/accuracy_vs_tokens.svg`` plots
accuracy (with its interval) against total tokens per problem.

    python benchmarks/stepco.py --model DIR [--backend auto] [--data embedded] [--problems 200]
        [--min-steps 2 --max-steps 4] [--best-of 2,4,8] [--stepco-verifiers exact,rules]
        [--max-tokens 512] [--prm-model DIR --prm-family step_tag] [--out runs/stepco]
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


def csv(kind: type) -> Any:
    return lambda text: [kind(x) for x in text.split(",") if x]


def runs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(name, SolveConfig fields) of every solve run, in the order they run."""
    common = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    out: list[tuple[str, dict[str, Any]]] = [("greedy", {**common, "strategy": "greedy", "verifier": "none"})]
    if args.best_of:
        out.append((f"sampled-{max(args.best_of)}", {**common, "strategy": "best-of-n", "n": max(args.best_of),
                                                      "verifier": "none", "select": "majority"}))
    for verifier in args.stepco_verifiers:
        out.append((f"stepco-{verifier}", {**common, "strategy": "stepco", "verifier": verifier,
                                           "revision": args.revision, "max_iterations": args.max_iterations}))
    return out


def line(arm: str, accuracy: float | None, ci: Any, policy: float | None, verifier: float | None,
         iterations: Any = "-", seconds: Any = "-", path_only: bool = False,
         by_problem: dict[str, bool] | None = None) -> dict[str, Any]:
    """One table row; ``by_problem`` (problem id -> right) feeds the paired comparisons and is not printed."""
    total = None if policy is None else round(policy + (verifier or 0.0), 1)
    return {"arm": arm, "accuracy": accuracy, "ci95": ci, "policy_tokens": policy, "verifier_tokens": verifier,
            "total_tokens": total, "mean_iterations": iterations, "seconds": seconds, "path_only": path_only,
            "by_problem": by_problem}


def solve_line(name: str, stats: dict[str, Any], seconds: float, solved: Any,
               path_only: bool = False) -> dict[str, Any]:
    tokens = stats.get("tokens_per_problem", {})
    right = dict(zip(solved["problem_id"].astype(str), solved["correct"].fillna(False).astype(bool)))
    return line(name, stats.get("accuracy"), stats.get("ci95"), tokens.get("policy"), tokens.get("verifier"),
                stats.get("mean_iterations"), round(seconds, 1), path_only, right)


def best_of_lines(solved: Any, problems: Any, args: argparse.Namespace, verifiers: list[str],
                  seconds: float, generator: Any = None, path_only: bool = False) -> list[dict[str, Any]]:
    """Best-of-k lines for every k and selection (majority, then each verifier) from one sampled table."""
    from stepdata.solve import SolveConfig
    from stepdata.solve.rescore import best_of_k, verify_stored

    n = max(args.best_of)
    out = []
    verdicts = {}
    for verifier in verifiers:
        config = SolveConfig(strategy="best-of-n", n=n, verifier=verifier, verifier_options=args.verifier_options.get(
            verifier, {}), threshold=args.threshold, prm_aggregate=args.prm_aggregate)
        verdicts[verifier] = verify_stored(solved, problems, config, generator)
    for k in args.best_of:
        share = round(seconds * k / n, 1)  # sampling time scales with samples; a cost estimate, marked "~"
        majority = best_of_k(solved, k)
        out.append(line(f"best-of-{k} (majority)", majority["by_majority"]["accuracy"],
                        majority["by_majority"]["ci95"], majority["policy_tokens"], 0.0, seconds=f"~{share}",
                        path_only=path_only, by_problem=majority["by_majority"]["by_problem"]))
        for verifier, found in verdicts.items():
            picked = best_of_k(solved, k, found)
            out.append(line(f"best-of-{k} ({verifier})", picked["by_verifier"]["accuracy"],
                            picked["by_verifier"]["ci95"], picked["policy_tokens"], picked["verifier_tokens"],
                            seconds=f"~{share}", path_only=path_only, by_problem=picked["by_verifier"]["by_problem"]))
    return out


def revision_report(solved: Any, split_mode: str = "auto") -> dict[str, Any]:
    """How StepCo's revisions went: rejected again at the step they rewrote, the step rewritten word for word,
    accepted; first attempts fixed or broken by revising; why problems stopped."""
    from collections import Counter

    from stepdata.solve.rescore import attempts_by_problem
    from stepdata.steps import split_steps

    revisions = same_step_rejected = identical_step = accepted = fixed = broken = revised_problems = 0
    for records in attempts_by_problem(solved).values():
        if not records:
            continue
        if len(records) > 1:
            revised_problems += 1
            fixed += (not records[0]["correct"]) and bool(records[-1]["correct"])
            broken += bool(records[0]["correct"]) and not records[-1]["correct"]
        for before, after in zip(records, records[1:]):
            revisions += 1
            k = after["revised_from"]
            verdict = after.get("verdict") or {}
            accepted += verdict.get("status") == "accepted"
            same_step_rejected += verdict.get("status") == "rejected" and verdict.get("step") == k
            old, new = split_steps(before["completion"], split_mode), split_steps(after["completion"], split_mode)
            identical_step += k is not None and k < len(old) and k < len(new) and old[k].strip() == new[k].strip()

    def rate(count: int) -> float | None:
        return round(count / revisions, 3) if revisions else None

    return {"revisions": revisions, "problems_revised": revised_problems,
            "rewritten_step_rejected_again": rate(same_step_rejected),
            "rewritten_step_identical": rate(identical_step), "revision_accepted": rate(accepted),
            "first_wrong_then_right": fixed, "first_right_then_wrong": broken,
            "stop_reasons": dict(Counter(solved["stop_reason"].dropna()))}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| arm | accuracy | 95% CI | policy tok/problem | verifier tok/problem | total | revisions | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "-" if not r["ci95"] else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%"
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        arm = f"{r['arm']} [path only]" if r["path_only"] else r["arm"]
        lines.append(f"| {arm} | {acc} | {ci} | {r['policy_tokens']} | {r['verifier_tokens']} | "
                     f"{r['total_tokens']} | {r['mean_iterations']} | {r['seconds']} |")
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]], largest: int) -> list[dict[str, Any]]:
    """StepCo with each verifier against best-of-``largest`` picked by the same verifier and against greedy, on
    the same problems: the accuracy difference with its paired-bootstrap interval and the exact McNemar p-value,
    and StepCo's share of the other's tokens (the goal: the same accuracy with at most half the tokens)."""
    from stepdata.experiment.stats import compare

    by_arm = {r["arm"]: r for r in rows if r.get("by_problem") and not r["path_only"]}
    out = []
    for arm, row in by_arm.items():
        if not arm.startswith("stepco-"):
            continue
        verifier = arm.removeprefix("stepco-")
        for other in (f"best-of-{largest} ({verifier})", f"best-of-{largest} (majority)", "greedy"):
            if other not in by_arm:
                continue
            problems = sorted(row["by_problem"])
            if sorted(by_arm[other]["by_problem"]) != problems:
                raise ValueError(f"{arm} and {other} were not run on the same problems")
            result = compare([float(row["by_problem"][p]) for p in problems],
                             [float(by_arm[other]["by_problem"][p]) for p in problems])
            share = row["total_tokens"] / by_arm[other]["total_tokens"] if by_arm[other]["total_tokens"] else None
            out.append({"arm": arm, "against": other, "difference": result["difference"], "ci95": result["ci95"],
                        "p_value": result["p_value"], "only_stepco": result.get("only_first"),
                        "only_other": result.get("only_second"), "token_share": None if share is None
                        else round(share, 3)})
    return out


def paired_table(comparisons: list[dict[str, Any]]) -> str:
    lines = ["| StepCo | against | difference (points) | 95% CI | McNemar p | only StepCo right | only other right "
             "| StepCo's tokens |", "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        low, high = c["ci95"]
        share = "-" if c["token_share"] is None else f"{100 * c['token_share']:.0f}%"
        lines.append(f"| {c['arm']} | {c['against']} | {100 * c['difference']:+.1f} | {100 * low:+.1f} to "
                     f"{100 * high:+.1f} | {c['p_value']:.3g} | {c['only_stepco']} | {c['only_other']} | {share} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> str:
    """Accuracy against total tokens per problem (our own SVG: no plotting library needed)."""
    from stepdata.audit.svg import point_chart

    points = [(r["arm"], r["total_tokens"], 100 * r["accuracy"], 100 * (r["ci95"] or (r["accuracy"],) * 2)[0],
               100 * (r["ci95"] or (r["accuracy"],) * 2)[1]) for r in rows
              if r["accuracy"] is not None and r["total_tokens"] is not None and not r["path_only"]]
    path.write_text(point_chart(title, points, "generated tokens per problem (policy + verifier)",
                                "accuracy (%), 95% CI") + "\n")
    return f"wrote {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--data", default="embedded", help="embedded[:N], gsm8k, svamp, a problems table, ...")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--problems", type=int, default=200, help="How many problems (the first N).")
    parser.add_argument("--min-steps", type=int, default=2, help="Embedded problems: fewest reasoning steps.")
    parser.add_argument("--max-steps", type=int, default=4, help="Embedded problems: most reasoning steps.")
    parser.add_argument("--best-of", default="2,4,8", type=csv(int))
    parser.add_argument("--bon-verifiers", default=None, type=csv(str),
                        help="Verifiers picking best-of-k (default: the StepCo verifiers).")
    parser.add_argument("--stepco-verifiers", default="exact,rules", type=csv(str))
    parser.add_argument("--revision", default="continue", choices=("continue", "prompt"))
    parser.add_argument("--max-iterations", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--prm-aggregate", default="min", choices=("min", "last"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prm-model", default=None, help="A PRM for the PRM-verifier path (best-of-N, StepCo).")
    parser.add_argument("--prm-family", default="step_tag")
    parser.add_argument("--prm-problems", type=int, default=16)
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/stepco")
    args = parser.parse_args()
    args.bon_verifiers = args.stepco_verifiers if args.bon_verifiers is None else args.bon_verifiers
    args.verifier_options = {"prm": {"prm_model": args.prm_model, "prm_family": args.prm_family}} \
        if args.prm_model else {}

    from stepdata.evaluate import load_eval_problems
    from stepdata.generation import make_generator
    from stepdata.keyvalues import parse_key_values
    from stepdata.solve import SolveConfig, run_solve

    problems, label = load_eval_problems(args.data, limit=args.problems, data_dir=args.data_dir,
                                         n_problems=args.problems, min_steps=args.min_steps,
                                         max_steps=args.max_steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [(name, SolveConfig(**fields)) for name, fields in runs(args)]  # a bad setting fails before loading
    rows: list[dict[str, Any]] = []
    revisions: dict[str, Any] = {}
    with make_generator(args.backend, args.model, **parse_key_values(args.engine_option)) as generator:
        for name, config in configs:
            print(f"{name}: {len(problems)} problems of {label} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            solved, stats = run_solve(generator, problems, str(out / f"{name}.parquet"), config)
            seconds = time.perf_counter() - start
            if name.startswith("sampled-"):
                rows += best_of_lines(solved, problems, args, args.bon_verifiers, seconds)
            else:
                rows.append(solve_line(name, stats, seconds, solved))
            if config.strategy == "stepco":
                revisions[name] = revision_report(solved, config.split_mode)
        if args.prm_model:
            few = problems.head(args.prm_problems)
            options = args.verifier_options["prm"]
            for name, fields in (("prm-sampled", {"strategy": "best-of-n", "n": max(args.best_of), "verifier": "none",
                                                  "select": "majority"}),
                                 ("prm-stepco", {"strategy": "stepco", "verifier": "prm", "verifier_options": options,
                                                 "threshold": args.threshold, "revision": args.revision})):
                config = SolveConfig(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                                     **fields)
                start = time.perf_counter()
                solved, stats = run_solve(generator, few, str(out / f"{name}.parquet"), config)
                seconds = time.perf_counter() - start
                if name == "prm-sampled":
                    rows += [r for r in best_of_lines(solved, few, args, ["prm"], seconds, path_only=True)
                             if "(prm)" in r["arm"]]
                else:
                    rows.append(solve_line("stepco-prm", stats, seconds, solved, path_only=True))
                    revisions["stepco-prm [path only]"] = revision_report(solved, config.split_mode)
    title = f"{Path(args.model).name} on {len(problems)} problems of {label}"
    print(f"{title} (max_tokens {args.max_tokens}; seconds are 0 for a run already finished on disk; best-of-k "
          f"seconds are the sampled run's share)\n\n{table(rows)}\n")
    comparisons = paired(rows, max(args.best_of)) if args.best_of else []
    if comparisons:
        print("paired on the same problems (difference = StepCo minus the other; tokens: StepCo's total as a share "
              f"of the other's)\n\n{paired_table(comparisons)}\n")
    for name, report in revisions.items():
        print(f"{name} revisions: {json.dumps(report)}")
    print(plot(rows, out / "accuracy_vs_tokens.svg", title))
    results = [{k: v for k, v in r.items() if k != "by_problem"} for r in rows]
    (out / "stepco.json").write_text(json.dumps({"model": args.model, "data": label, "problems": len(problems),
                                                 "args": vars(args), "results": results, "paired": comparisons,
                                                 "revisions": revisions}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
