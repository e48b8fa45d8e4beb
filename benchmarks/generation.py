"""Generation throughput: 32 prefixes x 8 continuations, every available backend vs a naive loop.

The workload is what rectification and rollouts do: many partial solutions, each
continued several times. Prefixes are embedded problems with their first gold
steps as the partial answer. Methods, all in this run on the same model:

- naive: transformers ``model.generate``, one request and one sample at a time
  (timed on a subset of the samples; tokens/s is a rate, so it compares);
- hf: stepdata's transformers backend (batched, seeded per sample);
- vllm: stepdata's vLLM backend (one generate call, prefix caching on), when installed;
- openai: stepdata's OpenAI backend against ``--base-url``, when given.

"prompt tokens computed" counts prompt tokens the engine had to run through
the model (all of them for naive and hf, those not served from cache for vLLM).

    python benchmarks/generation.py [--model DIR] [--max-tokens 64] [--naive-samples 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_requests(prefixes: int):
    from stepdata import load_prompt, make_problems, split_steps
    from stepdata.generation import GenerationRequest

    template = load_prompt("step_by_step")
    requests = []
    for row in make_problems(prefixes, seed=123, min_steps=3, max_steps=5).itertuples():
        messages = template.render(question=row.question)
        steps = split_steps(row.solution)
        keep = 1 + row.Index % 2  # one or two gold steps as the prefix
        partial = "Let's think step by step.\n" + "".join(steps[:keep]) + f"Step {keep + 1}:"
        messages[-1]["content"] = partial
        requests.append(GenerationRequest.chat(f"p{row.Index}", messages))
    return requests


def naive_loop(model_dir: str, requests, sampling, samples: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stepdata.generation.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    jobs = [(r, i) for r in requests for i in range(sampling.n)][:samples]
    tokens = prompt_tokens = 0
    start = time.perf_counter()
    for request, index in jobs:
        ids = tokenizer(render_prompt(tokenizer, request), add_special_tokens=False, return_tensors="pt")
        torch.manual_seed(index)
        out = model.generate(**ids, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                             max_new_tokens=sampling.max_tokens, pad_token_id=tokenizer.eos_token_id)
        tokens += out.shape[1] - ids.input_ids.shape[1]
        prompt_tokens += ids.input_ids.shape[1]
    seconds = time.perf_counter() - start
    scale = len(requests) * sampling.n / len(jobs)
    return {"samples": len(jobs), "seconds": seconds, "tokens": tokens,
            "prompt_tokens_computed": int(prompt_tokens * scale)}


def run_backend(generator, requests, sampling) -> dict:
    generator.generate(requests[:2], sampling, progress=False)  # warm-up (graphs, caches, threads)
    start = time.perf_counter()
    results = generator.generate(requests, sampling, progress=False)
    seconds = time.perf_counter() - start
    stats = generator.last_stats
    failed = sum(not r.ok for r in results)
    cached = stats.cached_prompt_tokens or 0
    return {"samples": stats.samples, "seconds": seconds, "tokens": stats.completion_tokens,
            "prompt_tokens_computed": stats.prompt_tokens * sampling.n if stats.cached_prompt_tokens is None
            else stats.prompt_tokens - cached, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: SmolLM2 via `stepdata model fetch smollm2`)")
    parser.add_argument("--prefixes", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--naive-samples", type=int, default=16, help="samples timed for the naive loop")
    parser.add_argument("--hf-batch-size", type=int, default=32)
    parser.add_argument("--base-url", help="also time the OpenAI backend against this server")
    parser.add_argument("--served-model", default="smollm2")
    parser.add_argument("--skip", nargs="*", default=[], choices=["hf", "vllm", "naive"])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from stepdata.generation import SamplingConfig, make_generator, vllm_available
    from stepdata.models import fetch_model

    model_dir = args.model or str(fetch_model("smollm2"))
    requests = build_requests(args.prefixes)
    sampling = SamplingConfig(n=args.n, temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    rows: dict[str, dict] = {}
    if "naive" not in args.skip:
        rows["naive transformers loop"] = naive_loop(model_dir, requests, sampling, args.naive_samples)
    if "hf" not in args.skip:
        with make_generator("hf", model_dir, batch_size=args.hf_batch_size) as generator:
            rows["stepdata hf (batched)"] = run_backend(generator, requests, sampling)
    if "vllm" not in args.skip and vllm_available():
        with make_generator("vllm", model_dir, max_model_len=2048) as generator:
            rows["stepdata vllm"] = run_backend(generator, requests, sampling)
    if args.base_url:
        with make_generator("openai", args.served_model, base_url=args.base_url, tokenizer=model_dir) as generator:
            rows["stepdata openai"] = run_backend(generator, requests, sampling)

    base = rows.get("naive transformers loop")
    base_rate = base["tokens"] / base["seconds"] if base else None
    print(f"workload: {args.prefixes} prefixes x {args.n} continuations, max_tokens {args.max_tokens}, model {model_dir}")
    print(f"| {'method':26s} | {'samples':>7s} | {'tokens':>7s} | {'seconds':>8s} | {'tokens/s':>9s} | {'x naive':>7s} | {'prompt tokens computed':>22s} |")
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 11}|{'-' * 9}|{'-' * 24}|")
    for name, row in rows.items():
        rate = row["tokens"] / row["seconds"]
        ratio = f"{rate / base_rate:.1f}" if base_rate else "-"
        print(f"| {name:26s} | {row['samples']:7d} | {row['tokens']:7d} | {row['seconds']:8.1f} | {rate:9.1f} | {ratio:>7s} | {row['prompt_tokens_computed']:22d} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":  # vLLM spawns workers
    main()
