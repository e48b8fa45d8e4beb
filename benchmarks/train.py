"""Step-DPO trainer cost: our StepDPOTrainer against plain TRL DPOTrainer on the same pairs.

Same model, same pairs, same batch, same optimizer settings, in one run. Each
trainer runs in its own subprocess so that peak memory (RSS on CPU, CUDA peak
allocation on a GPU) is its own; the two alternate for ``--repeats`` rounds and
the median is reported. Ours differs from plain TRL only in its data step
(EOS only where a side ends its solution, boundary check), so it must not be
slower by more than 5%.

Pairs: embedded problems' gold step against the same step off by one (error in a
middle step, so our data has no EOS there and TRL's has one: the sequences differ
by one token per side, as in real use). Plain TRL gets our TRL export (prompt
text with the chat template and prefix applied, chosen, rejected).

    python benchmarks/train.py [--model DIR] [--pairs 64] [--steps 8] [--batch 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _worker(args: argparse.Namespace) -> None:
    """Train one trainer for ``--steps`` steps and print a JSON line with its numbers."""
    import resource
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from stepdata.embedded import make_problems
    from stepdata.pairs.export import trl_table
    from stepdata.pairs.perturbed import perturbed_pairs
    from trainers.config import StepDPOConfig

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    pairs = perturbed_pairs(make_problems(args.pairs, seed=7, min_steps=3, max_steps=5), "step-dpo", error_at="middle")
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=5e-7, beta=0.4, warmup_steps=0, logging_steps=1, save_strategy="no",
                  use_cpu=not cuda, bf16=cuda, seed=0, gradient_checkpointing=False, report_to="none",
                  dataloader_num_workers=0)

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimes()
    if args.which == "ours":
        from trainers.step_dpo import StepDPOTrainer

        trainer = StepDPOTrainer(model=model, args=StepDPOConfig(**common), train_dataset=pairs,
                                 processing_class=tokenizer, callbacks=[timer])
    else:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        plain = Dataset.from_dict(trl_table(pairs, tokenizer).to_pydict())
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=plain, processing_class=tokenizer,
                             callbacks=[timer])
    tokens = sum(len(trainer.train_dataset[i]["prompt_ids"]) * 2 + len(trainer.train_dataset[i]["chosen_ids"])
                 + len(trainer.train_dataset[i]["rejected_ids"]) for i in range(len(trainer.train_dataset)))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steady = timer.times[1:] or timer.times  # the first step warms up kernels and allocators
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"which": args.which, "steps_per_s": 1 / statistics.mean(steady), "peak_bytes": peak,
                      "tokens_per_pair": tokens / len(trainer.train_dataset), "device": "cuda" if cuda else "cpu"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: SmolLM2-135M-Instruct from `stepdata model fetch`)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--which", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from stepdata.models import fetch_model

        args.model = str(fetch_model("smollm2"))
    if args.which:
        return _worker(args)
    results: dict[str, list[dict]] = {"ours": [], "plain": []}
    for _ in range(args.repeats):
        for which in ("plain", "ours"):
            cmd = [sys.executable, __file__, "--which", which, "--model", args.model, "--pairs", str(args.pairs),
                   "--steps", str(args.steps), "--batch", str(args.batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
            results[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
    row = {w: {"steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
               "peak_gib": max(r["peak_bytes"] for r in rs) / 2**30,
               "tokens_per_pair": rs[0]["tokens_per_pair"]} for w, rs in results.items()}
    device = results["ours"][0]["device"]
    print(f"model {args.model}  device {device}  pairs {args.pairs}  batch {args.batch}  steps {args.steps}  "
          f"repeats {args.repeats}")
    print(f"{'trainer':<24}{'steps/s':>10}{'ratio':>8}{'peak GiB':>10}{'tokens/pair':>13}")
    for which, label in (("plain", "TRL DPOTrainer"), ("ours", "stepdata StepDPOTrainer")):
        r = row[which]
        print(f"{label:<24}{r['steps_per_s']:>10.3f}{r['steps_per_s'] / row['plain']['steps_per_s']:>8.3f}"
              f"{r['peak_gib']:>10.2f}{r['tokens_per_pair']:>13.1f}")
    ratio = row["ours"]["steps_per_s"] / row["plain"]["steps_per_s"]
    print(f"ours / plain steps/s = {ratio:.3f} (target >= 0.95): {'PASS' if ratio >= 0.95 else 'FAIL'}")


if __name__ == "__main__":
    main()
