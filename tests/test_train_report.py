"""train_report.json: every optimizer step logged (even below TRL's logging interval) and the resolved settings;
`stepdata train --help` names each method's defaults."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import requires_train

from stepdata.embedded import make_problems
from stepdata.io import write_table
from stepdata.pairs.perturbed import perturbed_pairs


def test_help_names_each_methods_defaults():
    from cli import main

    text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=400).output.split())
    assert "default: stepdpo 5e-7, scdpo 1e-7, dpo 5e-7, sft 2e-4" in text  # --lr
    assert "default: stepdpo 0.4, scdpo 0.1, dpo 0.1" in text  # --beta
    assert "Per-device batch size (default: 8)" in text
    assert "cosine schedule with 10% warm-up" in text


@requires_train
def test_defaults_have_one_source():
    """The help is written from trainers.defaults; the configs' field defaults are the same values."""
    from trainers.config import CONFIGS
    from trainers.defaults import DEFAULTS
    from trainers.sft import StepSFTConfig

    for method, config_class in [*CONFIGS.items(), ("sft", StepSFTConfig)]:
        config = config_class(output_dir="x", use_cpu=True)
        for name, value in DEFAULTS[method].items():
            assert getattr(config, name) == value, (method, name)


@requires_train
def test_two_steps_give_two_log_entries_and_the_resolved_settings(tiny_model_dir, tmp_path):
    from cli import main

    path = tmp_path / "pairs.parquet"
    write_table(perturbed_pairs(make_problems(4, seed=3, min_steps=3, max_steps=4), "step-dpo", error_at="middle"),
                path, "pairs")
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", "stepdpo", "--model", str(tiny_model_dir), "--data", str(path),
                                       "--out", str(out), "--max-steps", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "train_report.json").read_text())
    log = report["log"]
    assert [entry["step"] for entry in log] == [1, 2]
    for entry in log:
        assert {"loss", "rewards/margins", "rewards/accuracies", "learning_rate"} <= entry.keys()
    settings = report["hyperparameters"]
    assert settings["learning_rate"] == 5e-7 and settings["beta"] == 0.4  # Step-DPO's defaults, as resolved
    assert settings["per_device_train_batch_size"] == 2 and settings["gradient_accumulation_steps"] == 1
    assert settings["effective_batch_size"] == 2
    assert settings["lr_scheduler_type"] == "cosine" and settings["warmup_steps"] == 0.1
    assert settings["max_steps"] == 2 and settings["optimizer_steps"] == 2 and settings["num_train_epochs"] == 3
    assert settings["max_length"] == 1024 and settings["seed"] == 0
    assert settings["kinds"] == ["step-dpo"] and settings["eos_policy"] == "auto" and settings["boundary"] == "fix"
    assert "train stepdpo: step 2/2, loss" in result.output  # our per-step line (stderr, mixed in by CliRunner)
    assert "{'loss'" not in result.output  # not transformers' printed dicts


@requires_train
def test_sft_report_logs_every_step(tiny_model_dir, tmp_path):
    from cli import main

    problems = tmp_path / "problems.parquet"
    write_table(make_problems(4, seed=9, max_steps=3), problems, "problems")
    out = tmp_path / "sft"
    result = CliRunner().invoke(main, ["train", "sft", "--model", str(tiny_model_dir), "--data", str(problems),
                                       "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "train_report.json").read_text())
    assert [entry["step"] for entry in report["log"]] == [1, 2] and all("loss" in e for e in report["log"])
    assert report["hyperparameters"]["learning_rate"] == 1e-3 and report["hyperparameters"]["template"] == "step_by_step"
