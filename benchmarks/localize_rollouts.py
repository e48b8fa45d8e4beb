"""Monte-Carlo rollout localization on embedded problems, where the first error is known exactly.

A real policy's wrong solutions to embedded problems (default: the warmed-up
SmolLM2 and the wrong rollouts the quickstart sampled) are localized three ways
in one run: the exact checker (every step against the gold steps: the truth),
rollouts with a linear scan over prefixes (Math-Shepherd), and rollouts with a
binary search (OmegaPRM). Both rollout searches use the same seeds per prefix,
so where they probe the same prefix they see the same samples.

Reported: agreement with the exact first error, agreement between the two
searches, probes and rollouts spent per localized solution, and the largest
number of binary probes against the bound 1 + ceil(log2(steps)).

    python benchmarks/localize_rollouts.py [--run runs/quickstart] [--model DIR] [--rollouts 4] [--limit 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="a quickstart output folder (rollouts + model)")
    parser.add_argument("--model", help="policy folder (default: RUN/model-sft)")
    parser.add_argument("--rollouts", type=int, default=4, help="continuations per probed prefix")
    parser.add_argument("--limit", type=int, default=40, help="wrong solutions to localize")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()

    from stepdata.generation import make_generator
    from stepdata.io import read_table
    from stepdata.localize.exact import exact_first_error
    from stepdata.localize.rollouts import (
        RolloutItem,
        RolloutLocalizer,
        max_binary_probes,
    )

    run = Path(args.run)
    problems = read_table(run / "problems.parquet", kind="problems").set_index("problem_id")
    rollouts = read_table(run / "rollouts.parquet", kind="rollouts")
    wrong = rollouts[rollouts["correct"].eq(False) & rollouts["error"].isna()]
    wrong = wrong[wrong["steps"].map(len) > 0].head(args.limit)
    truth = {r.rollout_id: exact_first_error(list(r.steps), problems.loc[r.problem_id, "meta"])[0]
             for r in wrong.itertuples()}
    items = [RolloutItem(r.rollout_id, problems.loc[r.problem_id, "question"], problems.loc[r.problem_id, "answer"],
                         list(r.steps)) for r in wrong.itertuples()]
    model = args.model or str(run / "model-sft")
    verdicts, seconds = {}, {}
    with make_generator(args.backend, model) as generator:
        for search in ("linear", "binary"):
            localizer = RolloutLocalizer(generator, rollouts=args.rollouts, search=search, max_tokens=args.max_tokens)
            start = time.perf_counter()
            verdicts[search] = localizer.localize(items)
            seconds[search] = time.perf_counter() - start
    print(f"policy {model}; {len(items)} wrong solutions; {args.rollouts} rollouts per probed prefix")
    print(f"{'search':<8}{'localized':>10}{'= exact':>9}{'probes/sol':>12}{'rollouts/sol':>14}{'max probes':>12}"
          f"{'bound ok':>10}{'seconds':>9}{'time ratio':>12}")
    for search in ("linear", "binary"):
        vs = verdicts[search]
        found = [(item, v) for item, v in zip(items, vs) if v.error_step is not None]
        agree = sum(v.error_step == truth[item.item_id] for item, v in found)
        within = all(v.probes <= max_binary_probes(len(item.steps)) for item, v in zip(items, vs))
        print(f"{search:<8}{len(found):>10}{agree / max(len(found), 1):>9.0%}"
              f"{statistics.mean(v.probes for v in vs):>12.2f}{statistics.mean(v.rollouts for v in vs):>14.1f}"
              f"{max(v.probes for v in vs):>12}{('yes' if within else 'no') if search == 'binary' else '-':>10}"
              f"{seconds[search]:>9.1f}{seconds[search] / seconds['linear']:>12.2f}")
    same = sum(a.error_step == b.error_step for a, b in zip(verdicts["linear"], verdicts["binary"]))
    print(f"binary = linear on {same}/{len(items)} solutions; exact first errors: "
          f"{sorted(statistics.multimode(truth.values()))} most common")


if __name__ == "__main__":
    main()
