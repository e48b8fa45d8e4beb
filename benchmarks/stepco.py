"""StepCo against greedy and best-of-N: accuracy (95% CI) against generated tokens per problem.

Arms (each one `stepdata solve` run over the same problems with one engine, its table written to
``OUT/ARM.parquet``, so a stopped benchmark resumes where it was and a finished arm is not redone):

- ``greedy``;
- ``best-of-N`` for each N of ``--best-of`` (default 2,4,8), one run picking by the verifier
  (``--bon-verifier``, default exact) and by majority vote (both recorded);
- ``stepco-V`` for each verifier V of ``--stepco-verifiers`` (default exact,rules), revision
  ``--revision`` (continue), at most ``--max-iterations`` revisions.

Printed (markdown; ``OUT/stepco.json`` has it all): per arm and selection the accuracy, its 95%
Wilson interval, policy / verifier / total tokens per problem, mean revisions and seconds. With
matplotlib installed, ``OUT/accuracy_vs_tokens.png`` plots accuracy (with its interval) against
total tokens per problem; without it, a line says so.

    python benchmarks/stepco.py --model DIR [--backend auto] [--data embedded] [--problems 100]
        [--best-of 2,4,8] [--stepco-verifiers exact,rules] [--max-tokens 512] [--out runs/stepco]
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


def arms(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(name, SolveConfig fields) of every arm, in the order they run."""
    common = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    out: list[tuple[str, dict[str, Any]]] = [("greedy", {**common, "strategy": "greedy", "verifier": "none"})]
    for n in args.best_of:
        out.append((f"best-of-{n}", {**common, "strategy": "best-of-n", "n": n, "verifier": args.bon_verifier,
                                     "select": "both"}))
    for verifier in args.stepco_verifiers:
        out.append((f"stepco-{verifier}", {**common, "strategy": "stepco", "verifier": verifier,
                                           "revision": args.revision, "max_iterations": args.max_iterations}))
    return out


def results_of(name: str, stats: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """One result line per selection the arm reports (best-of-N: by verifier and by majority)."""
    tokens = stats.get("tokens_per_problem", {})
    base = {"policy_tokens": tokens.get("policy"), "verifier_tokens": tokens.get("verifier"),
            "total_tokens": tokens.get("total"), "mean_iterations": stats.get("mean_iterations"),
            "errors": stats.get("errors"), "seconds": round(seconds, 1)}
    picks = [(f"{name} ({s})", stats[f"by_{s}"]) for s in ("verifier", "majority") if f"by_{s}" in stats]
    return [{"arm": label, "accuracy": part.get("accuracy"), "ci95": part.get("ci95"), **base}
            for label, part in (picks or [(name, stats)])]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| arm | accuracy | 95% CI | policy tok/problem | verifier tok/problem | total | revisions | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "-" if not r["ci95"] else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%"
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        lines.append(f"| {r['arm']} | {acc} | {ci} | {r['policy_tokens']} | {r['verifier_tokens']} | "
                     f"{r['total_tokens']} | {r['mean_iterations']} | {r['seconds']} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Accuracy against total tokens per problem, one point per arm and selection (matplotlib, if installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["accuracy"] is None or r["total_tokens"] is None:
            continue
        low, high = r["ci95"] or (r["accuracy"], r["accuracy"])
        ax.errorbar(r["total_tokens"], 100 * r["accuracy"], yerr=[[100 * (r["accuracy"] - low)],
                                                                   [100 * (high - r["accuracy"])]], fmt="o", capsize=3)
        ax.annotate(r["arm"], (r["total_tokens"], 100 * r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel("generated tokens per problem (policy + verifier)")
    ax.set_ylabel("accuracy (%), 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--data", default="embedded", help="embedded[:N], gsm8k, a problems table, ...")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--problems", type=int, default=100, help="How many problems (the first N).")
    parser.add_argument("--best-of", default="2,4,8", type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--bon-verifier", default="exact")
    parser.add_argument("--stepco-verifiers", default="exact,rules", type=lambda s: [x for x in s.split(",") if x])
    parser.add_argument("--revision", default="continue", choices=("continue", "prompt"))
    parser.add_argument("--max-iterations", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/stepco")
    args = parser.parse_args()

    from stepdata.evaluate import load_eval_problems
    from stepdata.generation import make_generator
    from stepdata.keyvalues import parse_key_values
    from stepdata.solve import SolveConfig, run_solve

    problems, label = load_eval_problems(args.data, limit=args.problems, data_dir=args.data_dir,
                                         n_problems=args.problems)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [(name, SolveConfig(**fields)) for name, fields in arms(args)]  # a bad setting fails before loading
    rows: list[dict[str, Any]] = []
    with make_generator(args.backend, args.model, **parse_key_values(args.engine_option)) as generator:
        for name, config in configs:
            print(f"{name}: {len(problems)} problems of {label} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            _, stats = run_solve(generator, problems, str(out / f"{name}.parquet"), config, progress=False)
            rows += results_of(name, stats, time.perf_counter() - start)
    text = table(rows)
    print(f"{args.model} on {len(problems)} problems of {label} (max_tokens {args.max_tokens}; seconds are 0 for an "
          f"arm already finished on disk)\n\n{text}")
    print(plot(rows, out / "accuracy_vs_tokens.png"))
    (out / "stepco.json").write_text(json.dumps({"model": args.model, "data": label, "problems": len(problems),
                                                 "args": vars(args), "results": rows}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
