"""The miniature of DPO-ST's main table: SFT, self-training and DPO-ST, each with and without the calculator.

DPO-ST (Wang, Li and Lu, ACL 2024) compares, per model and data set, the SFT model, plain
self-training (ST) and DPO-augmented self-training, decoding with and without a
calculator. Here the same on a CPU with SmolLM2-135M-Instruct (``--model`` for another):

1. ``stepdata selftrain --method dpo-st`` on ``--train-data`` (labelled: embedded problems by
   default, whose reference solutions teach the step format) for ``--iterations`` iterations,
   into ``OUT/dpo-st``; its warm-up ``OUT/dpo-st/iter0/model-sft`` is the SFT model;
2. ``stepdata selftrain --method st`` from that same warm-up (``warmup_model``), into ``OUT/st``;
3. every model (SFT, ST, DPO-ST) scored greedily on each data set of ``--eval`` (held-out
   embedded problems, GSM8K, MultiArith, ASDiv, SVAMP; the first ``--eval-problems`` of each),
   with plain decoding and with calculator decoding (``--calculator both|off|on``), both on
   the same loaded engine, one after the other (their order alternates from set to set).

Printed (markdown; ``OUT/dpo_st.json`` has it all): accuracy per model, decoding and data set
with its 95% Wilson interval, and the cost of calculator decoding against plain decoding in the
same run: generation seconds and generated tokens per problem, and their ratios (the target is at
most 1.3x the time). Every part is resumable: the self-training runs by their manifests, each
evaluation by its JSON file in ``OUT/eval`` (a resumed evaluation keeps the timings of the run
that made it).

A data set name this stepdata does not know is refused before anything is trained.

    python benchmarks/dpo_st.py [--model DIR] [--backend auto] [--train-data embedded:128] [--train-problems N]
        [--iterations 2]
        [--eval embedded,gsm8k,multiarith,asdiv,svamp] [--eval-problems 200] [--calculator both]
        [--data-dir ../shared/data] [--out runs/dpo_st]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_EVAL = "embedded,gsm8k,multiarith,asdiv,svamp"
TIME_TARGET = 1.3  # calculator decoding may take at most this many times plain decoding's time


def check_eval_names(names: list[str]) -> None:
    """Refuse a data set this stepdata cannot load by name, before anything is trained."""
    from stepdata.loaders import KNOWN_SETS

    for name in names:
        known = (name == "embedded" or name.startswith("embedded:") or name in KNOWN_SETS
                 or f"{name}:test" in KNOWN_SETS or Path(name).is_file())
        if not known:
            raise SystemExit(f"--eval: unknown data set {name!r}; this stepdata knows embedded[:N], "
                             f"{', '.join(sorted(KNOWN_SETS))} and files (leave {name!r} out of --eval until its "
                             "loader exists)")


def train_label(args: argparse.Namespace) -> str:
    """The training data as the reports name it: the data set, and how many of its problems when cut."""
    return args.train_data if args.train_problems is None else f"{args.train_data} (first {args.train_problems})"


def decodings(choice: str) -> list[bool]:
    """The calculator settings to score with (False: plain decoding)."""
    return {"off": [False], "on": [True], "both": [False, True]}[choice]


def self_train(args: argparse.Namespace, model: str, method: str, warmup_model: str | None) -> dict[str, Any]:
    """One self-training run (resumable) with the benchmark's settings; returns its manifest."""
    from stepdata.commands.common import load_units
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.keyvalues import parse_key_values
    from stepdata.selftrain import SelfTrainConfig, run_selftrain

    parse_key_values(args.engine_option)  # a bad item fails here, naming it
    config = SelfTrainConfig(method=method, iterations=args.iterations, samples=args.samples,
                             temperature=args.temperature, max_tokens=args.max_tokens,
                             sft_learning_rate=args.sft_learning_rate, sft_epochs=args.sft_epochs,
                             dpo_learning_rate=args.dpo_learning_rate, dpo_max_steps=args.dpo_max_steps,
                             dpo_beta=args.dpo_beta,
                             batch_size=args.batch_size, grad_accum=args.grad_accum, seed=args.seed,
                             calculator=args.train_calculator, warmup_model=warmup_model)
    problems = load_units(args.train_data, "problems", args.data_dir)
    if args.train_problems is not None:
        problems = problems.head(args.train_problems).reset_index(drop=True)
    engine = EngineConfig(backend=args.backend, engine_options=tuple(args.engine_option))
    return run_selftrain(Path(args.out) / method, model, problems, config, engine=engine,
                         data_label=train_label(args))


def evaluate_all(args: argparse.Namespace, models: dict[str, str], sets: dict[str, Any],
                 calculators: list[bool]) -> list[dict[str, Any]]:
    """Every (model, data set, decoding) score, one engine per model; each kept in OUT/eval/*.json."""
    from stepdata.evaluate import evaluate_model
    from stepdata.generation import SamplingConfig, make_generator
    from stepdata.keyvalues import parse_key_values
    from stepdata.solve.stats import wilson_interval

    folder = Path(args.out) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for arm, model in models.items():
        for name, (problems, label) in sets.items():
            for calc in calculators:
                check_kept(folder / f"{arm}-{name}-{'calc' if calc else 'plain'}.json", model, label, len(problems),
                           args)
        todo = [(name, calc) for name in sets for calc in calculators
                if not (folder / f"{arm}-{name}-{'calc' if calc else 'plain'}.json").exists()]
        generator = make_generator(args.backend, model, **parse_key_values(args.engine_option)) if todo else None
        try:
            for index, (name, (problems, label)) in enumerate(sets.items()):
                order = calculators if index % 2 == 0 else calculators[::-1]  # neither always runs first
                for calc in order:
                    path = folder / f"{arm}-{name}-{'calc' if calc else 'plain'}.json"
                    if not path.exists():
                        print(f"{arm} on {label} ({'calculator' if calc else 'plain'}) ...", file=sys.stderr,
                              flush=True)
                        greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=args.max_tokens, seed=0,
                                                calculator=calc)
                        result = evaluate_model(generator, problems, data=label, sampling=greedy)
                        record = {"arm": arm, "model": model, "data": name, "label": label, "calculator": calc,
                                  "max_tokens": args.max_tokens,
                                  "problems": result.problems, "correct": result.correct,
                                  "accuracy": result.accuracy, "ci95": wilson_interval(result.correct, result.samples),
                                  "errors": result.errors, "truncated": result.truncated,
                                  "completion_tokens": result.completion_tokens,
                                  "generate_seconds": result.generate_seconds, "seconds": result.seconds}
                        path.write_text(json.dumps(record, indent=1) + "\n")
                    records.append(json.loads(path.read_text()))
        finally:
            if generator is not None:
                generator.close()
    return records


def check_kept(path: Path, model: str, label: str, count: int, args: argparse.Namespace) -> None:
    """A kept evaluation is reused only when it scored the same model on the same problems with the same token
    limit; otherwise the run stops naming what changed (delete the file, or use another --out)."""
    if not path.exists():
        return
    kept = json.loads(path.read_text())
    wanted = {"model": model, "label": label, "problems": count, "max_tokens": args.max_tokens}
    changed = [f"{key}: {kept.get(key)!r} -> {value!r}" for key, value in wanted.items()
               if key in kept and kept[key] != value]
    if changed:
        raise SystemExit(f"{path} was made with other settings ({'; '.join(changed)}); delete it to score again "
                         "or give another --out")


def _cell(record: dict[str, Any] | None) -> str:
    if not record or record["accuracy"] is None:
        return "-"
    low, high = record["ci95"]
    return f"{100 * record['accuracy']:.1f} ({100 * low:.1f}-{100 * high:.1f})"


def accuracy_table(records: list[dict[str, Any]], sets: list[str]) -> str:
    rows = sorted({(r["arm"], r["calculator"]) for r in records}, key=lambda x: (ARMS.index(x[0]), x[1]))
    lines = ["| model | decoding | " + " | ".join(sets) + " | mean |", "|---|---|" + "---|" * (len(sets) + 1)]
    for arm, calc in rows:
        mine = {r["data"]: r for r in records if r["arm"] == arm and r["calculator"] == calc}
        scores = [mine[s]["accuracy"] for s in sets if s in mine and mine[s]["accuracy"] is not None]
        mean = f"{100 * sum(scores) / len(scores):.1f}" if scores else "-"
        lines.append(f"| {arm} | {'calculator' if calc else 'plain'} | "
                     + " | ".join(_cell(mine.get(s)) for s in sets) + f" | {mean} |")
    return "\n".join(lines)


def cost_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and data set (and over all), calculator against plain decoding: seconds and tokens per problem."""
    pairs: dict[tuple[str, str], dict[bool, dict[str, Any]]] = {}
    for r in records:
        pairs.setdefault((r["arm"], r["data"]), {})[r["calculator"]] = r
    rows = []
    totals = {False: [0.0, 0, 0], True: [0.0, 0, 0]}
    for (arm, data), both in pairs.items():
        if len(both) < 2:
            continue
        row = {"arm": arm, "data": data}
        for calc, r in both.items():
            totals[calc][0] += r["generate_seconds"]
            totals[calc][1] += r["completion_tokens"]
            totals[calc][2] += r["problems"]
        plain, calc = both[False], both[True]
        row |= {"plain_seconds": plain["generate_seconds"], "calc_seconds": calc["generate_seconds"],
                "plain_tokens_per_problem": round(plain["completion_tokens"] / max(plain["problems"], 1), 1),
                "calc_tokens_per_problem": round(calc["completion_tokens"] / max(calc["problems"], 1), 1),
                "time_ratio": round(calc["generate_seconds"] / plain["generate_seconds"], 3)
                if plain["generate_seconds"] else None,
                "token_ratio": round(calc["completion_tokens"] / plain["completion_tokens"], 3)
                if plain["completion_tokens"] else None}
        rows.append(row)
    if rows and totals[False][0] and totals[False][1]:
        rows.append({"arm": "all", "data": "all", "plain_seconds": round(totals[False][0], 1),
                     "calc_seconds": round(totals[True][0], 1),
                     "plain_tokens_per_problem": round(totals[False][1] / max(totals[False][2], 1), 1),
                     "calc_tokens_per_problem": round(totals[True][1] / max(totals[True][2], 1), 1),
                     "time_ratio": round(totals[True][0] / totals[False][0], 3),
                     "token_ratio": round(totals[True][1] / totals[False][1], 3)})
    return rows


def cost_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | data | plain s | calculator s | time ratio | plain tok/problem | calculator tok/problem | "
             "token ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['data']} | {r['plain_seconds']} | {r['calc_seconds']} | {r['time_ratio']} | "
                     f"{r['plain_tokens_per_problem']} | {r['calc_tokens_per_problem']} | {r['token_ratio']} |")
    return "\n".join(lines)


ARMS = ["SFT", "ST", "DPO-ST"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="A model folder, or smollm2 (built from PyPI).")
    parser.add_argument("--backend", default="auto", choices=("auto", "vllm", "hf"))
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--train-data", default="embedded:128", help="Labelled training problems.")
    parser.add_argument("--train-problems", type=int, default=None,
                        help="Train on the first N problems of --train-data only (gsm8k:train has 7,473).")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4, help="Rationales per question at each sampling.")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=256, help="Sampling and evaluation.")
    parser.add_argument("--sft-learning-rate", type=float, default=3e-4)
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--dpo-learning-rate", type=float, default=3e-7)
    parser.add_argument("--dpo-max-steps", type=int, default=None)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-calculator", action="store_true", help="Calculator decoding while self-training.")
    parser.add_argument("--eval", default=DEFAULT_EVAL, type=lambda s: [x for x in s.split(",") if x],
                        help=f"Data sets to score on (default {DEFAULT_EVAL}; embedded: held-out seed 12345).")
    parser.add_argument("--eval-problems", type=int, default=200, help="The first N problems of each set.")
    parser.add_argument("--calculator", default="both", choices=("both", "off", "on"),
                        help="Score with plain decoding, calculator decoding, or both.")
    parser.add_argument("--data-dir", default=None, help="Where named data sets live (or $STEPDATA_DATA_DIR).")
    parser.add_argument("--out", default="runs/dpo_st")
    args = parser.parse_args()

    from stepdata.evaluate import load_eval_problems
    from stepdata.models import MODELS, fetch_model

    check_eval_names(args.eval)
    calculators = decodings(args.calculator)
    sets = {name: load_eval_problems(name, limit=args.eval_problems, n_problems=args.eval_problems,
                                     data_dir=args.data_dir) for name in args.eval}
    model = str(fetch_model(args.model)) if args.model in MODELS else args.model
    dpo_st = self_train(args, model, "dpo-st", None)
    warmup = dpo_st["warmup"]["model"]
    st = self_train(args, model, "st", warmup)
    models = {"SFT": warmup, "ST": st["final_model"], "DPO-ST": dpo_st["final_model"]}
    records = evaluate_all(args, models, sets, calculators)
    costs = cost_rows(records)
    print(f"{Path(model).name}: SFT on {train_label(args)}, then {args.iterations} iteration(s) of ST and DPO-ST; "
          f"greedy accuracy (%) with 95% Wilson intervals on the first {args.eval_problems} problems of each set\n")
    print(accuracy_table(records, args.eval))
    if costs:
        verdict = costs[-1]["time_ratio"]
        print(f"\ncalculator decoding against plain decoding, same run (target: time ratio <= {TIME_TARGET}; "
              f"overall {verdict}):\n")
        print(cost_table(costs))
    summary = {"model": model, "args": vars(args), "models": models, "results": records, "calculator_cost": costs,
               "selftrain": {"dpo-st": str(Path(args.out) / "dpo-st"), "st": str(Path(args.out) / "st")}}
    (Path(args.out) / "dpo_st.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
