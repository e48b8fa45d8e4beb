"""Answer-check throughput: stepdata's checker vs calling Math-Verify directly, in one run.

Two workloads:
- GSM8K-style: 10,000 (gold, prediction) pairs built from GSM8K gold answers, each
  prediction the gold number re-spelled (commas, "$", ".00", unit words, percent) or a
  wrong number (off by one, by ten times, by a half).
- MATH-500: each gold answer against its full reference solution (the checker must
  find the \\boxed{} answer and compare LaTeX). Both methods warm up on one half of
  the set and are timed on the other half, in alternating rounds (median kept).

Both methods see the same pairs in the same process; the table reports checks per
second, the ratio to Math-Verify measured in this run, and how many verdicts agree.

    python benchmarks/answers.py [--data-dir ../shared/data] [--pairs 10000]
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stepdata import check_answer, load_problems
from stepdata.answers import AnswerCheckConfig, check_answers, parse_plain_number


def respell(value: str, rng: random.Random) -> tuple[str, bool]:
    """A prediction for gold ``value``: the same number written differently, or a wrong one."""
    number = parse_plain_number(value)
    assert number is not None, value
    exact = number.value
    if rng.random() < 0.4:
        wrong = rng.choice([exact + 1, exact - 1, exact * 10, exact + exact / 2 if exact else 7])
        text = str(wrong.numerator) if wrong.denominator == 1 else f"{float(wrong):.2f}"
        return text, False
    integer = exact.denominator == 1
    plain = str(exact.numerator) if integer else f"{float(exact):g}"
    forms = [plain, f"{plain} dollars", f"${plain}", f"{plain} apples"]
    if integer:
        forms += [f"{exact.numerator:,}", f"{exact.numerator}.00", f"${exact.numerator:,}"]
    return rng.choice(forms), True


def gsm8k_pairs(data_dir: Path | None, count: int, seed: int) -> tuple[list[tuple[str, str]], str]:
    rng = random.Random(seed)
    if data_dir is not None and (data_dir / "gsm8k" / "train.jsonl").exists():
        golds = list(load_problems("gsm8k:train", data_dir=data_dir).answer) + list(
            load_problems("gsm8k:test", data_dir=data_dir).answer
        )
        origin = "GSM8K gold answers"
    else:
        golds = list(load_problems("embedded", limit=2000).answer)
        origin = "embedded problems (GSM8K data not found)"
    pairs = []
    for _ in range(count):
        gold = rng.choice(golds)
        pairs.append((gold, respell(gold, rng)[0]))
    return pairs, origin


def math500_pairs(data_dir: Path | None) -> list[tuple[str, str]]:
    if data_dir is None or not (data_dir / "math500" / "test.jsonl").exists():
        return []
    df = load_problems("math500", data_dir=data_dir)
    return list(zip(df.answer, df.solution))


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def math_verify_direct(pairs: list[tuple[str, str]]) -> tuple[list[bool], float]:
    """The baseline: Math-Verify's own parse and verify, defaults, gold in $...$ unless delimited."""
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = []
    for gold, pred in pairs:
        gold_text = gold if _UNESCAPED_DOLLAR.search(gold) else f"${gold}$"
        verdicts.append(bool(verify(parse(gold_text), parse(pred))))
    return verdicts, time.perf_counter() - start


def ours_sequential(pairs: list[tuple[str, str]], config: AnswerCheckConfig) -> tuple[list[bool], float]:
    start = time.perf_counter()
    verdicts = [check_answer(gold, pred, config).match for gold, pred in pairs]
    return verdicts, time.perf_counter() - start


def ours_parallel(pairs: list[tuple[str, str]], config: AnswerCheckConfig) -> tuple[list[bool], float]:
    start = time.perf_counter()
    verdicts = [v.match for v in check_answers(pairs, config)]
    return verdicts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds on MATH-500 (median kept)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # Math-Verify warns per call when its own time-outs are off

    config = AnswerCheckConfig(timeout=10.0)
    check_answer("\\frac{1}{2}", "\\sqrt{1/4}", config)  # start the workers before timing
    rows = []

    pairs, origin = gsm8k_pairs(args.data_dir, args.pairs, args.seed)
    reference, base_seconds = math_verify_direct(pairs)
    ours, seconds = ours_sequential(pairs, config)
    agree = sum(a == b for a, b in zip(reference, ours))
    rows.append(("GSM8K-style", len(pairs), "math-verify direct", len(pairs) / base_seconds, 1.0, "-"))
    rows.append(("GSM8K-style", len(pairs), "stepdata (fast path)", len(pairs) / seconds, base_seconds / seconds,
                 f"{agree}/{len(pairs)}"))

    latex = math500_pairs(args.data_dir)
    if latex:
        # Warm both sides (sympy's caches, our workers) on one half, time both on the other.
        half = len(latex) // 2
        math_verify_direct(latex[:half])
        ours_parallel(latex[:half], config)
        latex = latex[half:]
        # Timings on this workload vary by +-20% between processes: alternate rounds, keep medians.
        runners = {"math-verify direct": math_verify_direct,
                   "stepdata, 1 thread": lambda p: ours_sequential(p, config),
                   "stepdata, check_answers": lambda p: ours_parallel(p, config)}
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        verdicts: dict[str, list[bool]] = {}
        for _ in range(args.rounds):
            for name, runner in runners.items():
                verdicts[name], took = runner(latex)
                seconds[name].append(took)
        base = statistics.median(seconds["math-verify direct"])
        for name in runners:
            took = statistics.median(seconds[name])
            agree = sum(a == b for a, b in zip(verdicts["math-verify direct"], verdicts[name]))
            rows.append(("MATH-500 (vs solution)", len(latex), name, len(latex) / took, base / took,
                         "-" if name == "math-verify direct" else f"{agree}/{len(latex)}"))

    print(f"pairs: {origin}; {__import__('os').cpu_count()} CPU cores")
    print(f"| {'workload':24s} | {'pairs':>6s} | {'method':26s} | {'checks/s':>10s} | {'x math-verify':>13s} | {'same verdict':>12s} |")
    print(f"|{'-' * 26}|{'-' * 8}|{'-' * 28}|{'-' * 12}|{'-' * 15}|{'-' * 14}|")
    for workload, count, method, rate, ratio, agree in rows:
        print(f"| {workload:24s} | {count:6d} | {method:26s} | {rate:10.0f} | {ratio:13.1f} | {agree:>12s} |")


if __name__ == "__main__":
    main()
