"""The trainers on a tiny random Llama: a few steps of each raise the chosen-over-rejected
log-prob margin, sDPO swaps its reference model per stage, SFT data masks the prompt.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import requires_train

from stepdata.embedded import make_problems
from stepdata.pairs.perturbed import perturbed_pairs

pytestmark = requires_train


def _pairs(kind: str, n: int = 8) -> pd.DataFrame:
    """Gold steps against the same step off by one; for Step-DPO the error is a middle step (no EOS)."""
    return perturbed_pairs(make_problems(n, seed=3, min_steps=3, max_steps=4), kind, error_at="middle")


def _margin(model, dataset, collator) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected) under ``model`` (completion tokens only)."""
    import torch

    batch = collator([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    per_seq = (logps * batch["completion_mask"][:, 1:]).sum(-1)
    chosen, rejected = per_seq.chunk(2)
    return float((chosen - rejected).mean())


@pytest.mark.parametrize("method,kind", [("stepdpo", "step-dpo"), ("scdpo", "scdpo"), ("dpo", "dpo")])
def test_a_few_steps_raise_the_chosen_margin(tiny_model_dir, tmp_path, method, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.config import CONFIGS
    from trainers.step_dpo import StepDPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = CONFIGS[method](output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=12,
                             learning_rate=2e-3, beta=0.5, warmup_steps=0, use_cpu=True, save_strategy="no",
                             logging_steps=4, seed=0)
    assert config.kinds == (kind,)
    trainer = StepDPOTrainer(model=model, args=config, train_dataset=_pairs(kind), processing_class=tokenizer)
    assert trainer.data_report.rows_out == 8 and trainer.data_report.dropped == []
    expected_eos = 0 if kind == "step-dpo" else 16  # a middle step gets none; whole continuations both get one
    assert trainer.data_report.eos_added == expected_eos
    before = _margin(trainer.model, trainer.train_dataset, trainer.data_collator)
    trainer.train()
    after = _margin(trainer.model, trainer.train_dataset, trainer.data_collator)
    assert after > before + 0.5, (before, after)


def test_paper_defaults_and_overrides():
    from trainers.config import DPOBaselineConfig, SCDPOConfig, StepDPOConfig

    step = StepDPOConfig(output_dir="x", use_cpu=True)
    assert (step.beta, step.learning_rate, step.lr_scheduler_type, step.warmup_steps) == (0.4, 5e-7, "cosine", 0.1)
    assert step.eos_policy == "auto" and step.boundary == "fix"
    scdpo = SCDPOConfig(output_dir="x", use_cpu=True)
    assert (scdpo.beta, scdpo.learning_rate, scdpo.kinds) == (0.1, 1e-7, ("scdpo",))
    assert DPOBaselineConfig(output_dir="x", use_cpu=True, beta=0.3).beta == 0.3


def test_sdpo_stages_use_the_previous_stage_as_reference(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.config import StepDPOConfig
    from trainers.staged import problem_order, split_stages, train_staged

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = _pairs("step-dpo", n=6)
    # difficulty from rollouts: accuracy falls along the file order, except that it is given in reverse
    ids = list(pairs["problem_id"])
    accuracy = {pid: 1 - i / (len(ids) - 1) for i, pid in reversed(list(enumerate(ids)))}
    rollouts = pd.DataFrame([{"problem_id": pid, "correct": c}
                             for pid, acc in accuracy.items() for c in [True] * round(acc * 4) + [False] * (4 - round(acc * 4))])
    order = problem_order(pairs, rollouts)
    assert order == ids  # easiest (all rollouts right) first
    parts = split_stages(pairs, 2, order)
    assert [len(p) for p in parts] == [3, 3] and set(parts[0].problem_id).isdisjoint(parts[1].problem_id)

    seen = {}

    def capture(stage, trainer):
        seen[stage] = {
            "ref": {k: v.detach().clone() for k, v in trainer.ref_model.state_dict().items()},
            "trained": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "problems": set(trainer.train_dataset["pair_id"]) if "pair_id" in trainer.train_dataset.column_names else None,
        }

    config = StepDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, max_steps=3, learning_rate=5e-3,
                           warmup_steps=0, use_cpu=True, save_strategy="no", seed=0)
    _, records = train_staged(model, tokenizer, pairs, config, stages=2, rollouts=rollouts, on_stage_end=capture)
    assert [r["pairs"] for r in records] == [3, 3]
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(seen[1]["ref"][name], initial[name])  # stage 1: reference = the starting model
    assert torch.equal(seen[2]["ref"][name], seen[1]["trained"][name])  # stage 2: reference = stage 1's result
    assert not torch.equal(seen[2]["ref"][name], initial[name])


def test_sft_data_masks_the_prompt_and_ends_with_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    from stepdata.steps import to_step_format
    from trainers.sft import sft_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = make_problems(3, seed=5)
    problems.loc[2, "solution"] = None
    dataset, report = sft_dataset(problems, tokenizer)
    assert report.rows_out == 2 and report.dropped_by_reason == {"no_solution": 1}
    row = dataset[0]
    completion = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    prompt = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if not m]
    text = tokenizer.decode(completion[:-1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert completion[-1] == tokenizer.eos_token_id
    assert "Step 1:" + text == problems.solution[0]  # the template already wrote "Step 1:"
    assert tokenizer.decode(prompt).endswith("Let's think step by step.\nStep 1:")
    gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn total 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert to_step_format(gsm8k, None) == (
        "Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: In total 48+24 = 72 clips.\nThe answer is 72.")


def test_sft_a_few_steps_lower_the_loss(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.sft import StepSFTConfig, StepSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = StepSFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=15, learning_rate=3e-3,
                           use_cpu=True, save_strategy="no", logging_steps=5, seed=0)
    trainer = StepSFTTrainer(model=model, args=config, train_dataset=make_problems(8, seed=2, max_steps=3),
                             processing_class=tokenizer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.8, losses


def test_cli_train_with_lora_saves_a_merged_model_and_a_report(tiny_model_dir, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from cli import main
    from stepdata.io import write_table

    pairs = _pairs("step-dpo", n=4)
    path = tmp_path / "pairs.parquet"
    write_table(pairs, path, "pairs")
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", "stepdpo", "--model", str(tiny_model_dir), "--data", str(path),
                                       "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--lora-r", "4",
                                       "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["method"] == "stepdpo" and report["data"]["rows_out"] == 4
    assert not (out / "adapter_config.json").exists()  # merged: a plain model folder every backend loads
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    # a pairs table with none of the method's kind is a clear error, not an empty run
    result = CliRunner().invoke(main, ["train", "scdpo", "--model", str(tiny_model_dir), "--data", str(path),
                                       "--out", str(tmp_path / "m2"), "--max-steps", "1"])
    assert result.exit_code != 0 and "no trainable pairs" in result.output


def test_cli_sft_reads_a_plain_problems_file(tiny_model_dir, tmp_path):
    """`train sft --data` takes any problems file (here JSON lines), not only a stepdata Parquet table."""
    from click.testing import CliRunner

    from cli import main

    path = tmp_path / "problems.jsonl"
    rows = make_problems(4, seed=9, max_steps=3)[["question", "answer", "solution"]].to_dict("records")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    result = CliRunner().invoke(main, ["train", "sft", "--model", str(tiny_model_dir), "--data", str(path),
                                       "--out", str(out), "--max-steps", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train_report.json").read_text())["data"]["rows_out"] == 4
