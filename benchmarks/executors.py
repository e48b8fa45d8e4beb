"""Stage throughput of the local and the Ray executor against bare vLLM ``generate``, on the same requests.

The workload is stage 1 (sample) on embedded problems with the vLLM backend. Each
method runs it ``--repeats`` times, in a rotating order, in this one run:

- bare vLLM: ``LLM.generate`` once over every problem's prompt (the stage's template,
  rendered and tokenized as the backend does) with the stage's ``SamplingParams``
  (n, temperature, top_p, max_tokens, the per-request seed); nothing else;
- local executor: the sample stage through :class:`LocalExecutor` with that same
  loaded engine: batches, answer checks, Parquet parts, manifest, summary;
- Ray executor: the sample stage through :class:`RayExecutor`, one worker on a local
  Ray cluster; the worker loads its own engine first ("worker start", reported
  apart); its throughput counts the batches' time (hand-out, work, rows back).

tokens/s is completion tokens over seconds; "x bare" is each run's rate over the bare
rate of the same repeat, and the table shows the median with the range. vLLM's
prefix cache is reset before every run, so no method reuses another's prompts.

    python benchmarks/executors.py [--model DIR] [--problems 32] [--n 4] [--max-tokens 96]
                                   [--batch-size 16] [--repeats 3] [--skip ray] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bare_vllm(generator, problems, stage) -> dict:
    """The stage's requests straight to vLLM: one generate call, no stage around it."""
    from vllm.inputs import TokensPrompt

    from stepdata.generation.templates import encode_prompt

    requests = [stage.request_for(p) for p in problems.itertuples()]
    prompts = [TokensPrompt(prompt_token_ids=encode_prompt(generator.tokenizer, r, generator.render(r)))
               for r in requests]
    params = [generator._sampling_params(stage.sampling, r) for r in requests]
    generator.llm.reset_prefix_cache()
    start = time.perf_counter()
    outputs = generator.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"tokens": tokens, "seconds": seconds}


def local_executor(generator, problems, config, out: Path, batch_size: int) -> dict:
    from stepdata.pipeline.executor import LocalExecutor, RunOptions
    from stepdata.pipeline.sample import SampleStage

    generator.llm.reset_prefix_cache()
    options = RunOptions(out=str(out), batch_size=batch_size, overwrite=True, progress=False)
    start = time.perf_counter()
    result = LocalExecutor(options, echo=lambda line: None).run(SampleStage(generator, config), problems)
    seconds = time.perf_counter() - start
    return {"tokens": result.stats["completion_tokens"], "seconds": seconds}


def ray_executor(engine, problems, config, out: Path, batch_size: int, cpus: float) -> dict:
    from stepdata.pipeline.executor import RunOptions
    from stepdata.pipeline.ray_executor import RayExecutor, RayOptions
    from stepdata.pipeline.sample import SampleStage

    options = RunOptions(out=str(out), batch_size=batch_size, overwrite=True, progress=False, executor="ray")
    executor = RayExecutor(options, RayOptions(actors=1, cpus_per_actor=cpus), echo=lambda line: None)
    start = time.perf_counter()
    result = executor.run(SampleStage(engine, config), problems)
    total = time.perf_counter() - start
    return {"tokens": result.stats["completion_tokens"], "seconds": executor.timings["process"],
            "worker_start": executor.timings["start_workers"], "end_to_end": total}


def summarize(runs: list[dict], bare: list[dict]) -> dict:
    rates = [r["tokens"] / r["seconds"] for r in runs]
    ratios = [rate / (b["tokens"] / b["seconds"]) for rate, b in zip(rates, bare)]
    return {"tokens_per_second": statistics.median(rates), "rate_range": (min(rates), max(rates)),
            "x_bare": statistics.median(ratios), "x_bare_range": (min(ratios), max(ratios)),
            "tokens": statistics.median(r["tokens"] for r in runs), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: SmolLM2 via `stepdata model fetch smollm2`)")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16, help="the stage's units per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-cpus", type=float, default=2.0, help="CPUs of the local Ray cluster and its worker")
    parser.add_argument("--skip", nargs="*", default=[], choices=["local", "ray"])
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from stepdata import make_problems
    from stepdata.generation.engine_config import EngineConfig
    from stepdata.models import fetch_model
    from stepdata.pipeline.sample import SampleConfig, SampleStage

    model_dir = args.model or str(fetch_model("smollm2"))
    problems = make_problems(args.problems, seed=31, min_steps=2, max_steps=4)
    config = SampleConfig(n=args.n, max_tokens=args.max_tokens, seed=0)
    engine = EngineConfig(backend="vllm", model=model_dir, engine_options=("max_model_len=2048",))
    generator = engine.build()
    stage = SampleStage(generator, config)
    methods = ["bare"] + [m for m in ("local", "ray") if m not in args.skip]
    if "ray" in methods:
        import ray

        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    measured: dict[str, list[dict]] = {m: [] for m in methods}
    bare_vllm(generator, problems.head(2), stage)  # warm-up
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            order = methods[repeat % len(methods):] + methods[:repeat % len(methods)]
            for method in order:
                out = Path(folder) / f"{method}.parquet"
                if method == "bare":
                    row = bare_vllm(generator, problems, stage)
                elif method == "local":
                    row = local_executor(generator, problems, config, out, args.batch_size)
                else:
                    row = ray_executor(engine, problems, config, out, args.batch_size, args.ray_cpus)
                measured[method].append(row)
                print(f"repeat {repeat + 1}/{args.repeats} {method}: {row['tokens']} tokens in {row['seconds']:.1f}s "
                      f"({row['tokens'] / row['seconds']:.1f} tok/s)", file=sys.stderr, flush=True)
    generator.close()

    names = {"bare": "bare vLLM generate", "local": "local executor (sample)", "ray": "Ray executor (sample, 1 worker)"}
    table = {m: summarize(measured[m], measured["bare"]) for m in methods}
    print(f"workload: sample, {args.problems} problems x {args.n} samples, max_tokens {args.max_tokens}, "
          f"batch size {args.batch_size}, {args.repeats} repeats, model {model_dir}")
    print(f"| {'method':32s} | {'tokens':>7s} | {'tokens/s (median, range)':>28s} | {'x bare (median, range)':>24s} | "
          f"{'overhead':>8s} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 30}|{'-' * 26}|{'-' * 10}|")
    for method, row in table.items():
        low, high = row["rate_range"]
        rlow, rhigh = row["x_bare_range"]
        print(f"| {names[method]:32s} | {row['tokens']:7.0f} | {row['tokens_per_second']:7.1f} ({low:7.1f}-{high:7.1f})"
              f"{'':>3s} | {row['x_bare']:5.3f} ({rlow:5.3f}-{rhigh:5.3f}){'':>5s} | "
              f"{(1 - row['x_bare']) * 100:7.1f}% |")
    if "ray" in table:
        starts = [r["worker_start"] for r in measured["ray"]]
        print(f"Ray worker start (engine load in the worker), not in the rate: median {statistics.median(starts):.1f}s")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": table},
                                        indent=2, default=str))


if __name__ == "__main__":  # vLLM spawns workers
    main()
