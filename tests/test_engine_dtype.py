"""The dtype an engine runs in: chosen by us (the model's own, unless the device cannot), overridable,
exposed as generator.dtype, and recorded in every stage table's metadata without upsetting a resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import requires_torch

from stepdata.io import read_metadata


def model_folder(tmp_path: Path, config: dict) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_model_dtype_reads_either_config_key(tmp_path):
    from stepdata.generation import dtypes

    assert dtypes.model_dtype(model_folder(tmp_path, {"dtype": "bfloat16"})) == "bfloat16"
    (tmp_path / "model" / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))  # older transformers
    assert dtypes.model_dtype(tmp_path / "model") == "float16"
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))  # none named: float32
    assert dtypes.model_dtype(tmp_path / "model") == "float32"
    assert dtypes.model_dtype(tmp_path / "absent") is None
    assert [dtypes.canonical_dtype(x) for x in ("bf16", "half", "float", "torch.float32")] == \
        ["bfloat16", "float16", "float32", "float32"]
    with pytest.raises(ValueError, match="unknown dtype"):
        dtypes.canonical_dtype("int8")


def test_vllm_keeps_a_float32_model_in_float32_and_obeys_an_override(tmp_path):
    from stepdata.generation import dtypes

    folder = model_folder(tmp_path, {"dtype": "float32"})
    assert dtypes.choose_vllm_dtype(folder) == ("float32", None)  # vLLM's "auto" would make it bfloat16
    assert dtypes.choose_vllm_dtype(folder, "bf16") == ("bfloat16", None)
    assert dtypes.choose_vllm_dtype(tmp_path / "no-config", "auto") == ("auto", None)  # vLLM decides, reported later


def test_a_dtype_the_device_cannot_run_is_changed_with_a_reason(tmp_path, monkeypatch):
    from stepdata.generation import dtypes

    folder = model_folder(tmp_path, {"dtype": "bfloat16"})
    monkeypatch.setattr(dtypes, "device_runs", lambda dtype, cuda=None: dtype != "bfloat16")  # a pre-Ampere GPU
    chosen, note = dtypes.choose_vllm_dtype(folder)
    assert chosen == "float16" and "bfloat16" in note and "float16" in note
    assert dtypes.choose_vllm_dtype(folder, "bfloat16") == ("bfloat16", None)  # asked for explicitly: as asked


@requires_torch
def test_hf_generator_reports_its_dtype(tiny_model_dir):
    from stepdata.generation import make_generator
    from stepdata.generation.base import describe_engine

    assert describe_engine("hf", str(tiny_model_dir), device="cpu") == \
        {"backend": "hf", "model": str(tiny_model_dir), "dtype": "float32"}
    with make_generator("hf", str(tiny_model_dir), device="cpu") as generator:
        assert generator.dtype == "float32" and generator.describe()["dtype"] == "float32"
    with make_generator("hf", str(tiny_model_dir), device="cpu", dtype="bf16") as generator:
        assert generator.dtype == "bfloat16"
    assert describe_engine("hf", str(tiny_model_dir), device="cpu", dtype="bf16")["dtype"] == "bfloat16"
    assert describe_engine("openai", "served-name")["dtype"] is None  # the server's business


@requires_torch
def test_stage_tables_record_the_engine_and_a_resume_accepts_its_own_batches(tiny_model_dir, tmp_path):
    from cli import main

    out = tmp_path / "rollouts.parquet"
    args = ["sample", "embedded:4", "--backend", "hf", "--model", str(tiny_model_dir), "--n", "1",
            "--max-tokens", "8", "--batch-size", "2", "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    engine = {"backend": "hf", "model": str(tiny_model_dir), "dtype": "float32"}
    assert read_metadata(out)["config"]["engine"] == engine
    parts = sorted(out.with_name(out.name + ".parts").glob("part-*.parquet"))
    assert parts and all(read_metadata(p)["config"]["engine"] == engine for p in parts)
    again = CliRunner().invoke(main, args)  # the same command: its own batches, nothing refused
    assert again.exit_code == 0, again.output
    other = CliRunner().invoke(main, [*args, "--engine-option", "dtype=bfloat16"])  # another dtype is another config
    assert other.exit_code != 0 and "engine" in other.output and "bfloat16" in other.output
    pairs = tmp_path / "scdpo.parquet"
    result = CliRunner().invoke(main, ["synthesize", "embedded:2", "--backend", "hf", "--model", str(tiny_model_dir),
                                       "--rounds", "1", "--max-step-tokens", "8", "--out", str(pairs)])
    assert result.exit_code == 0, result.output
    assert read_metadata(pairs)["config"]["engine"] == engine


# vLLM keeping the float32 tiny model in float32 (its engine report included) is checked in
# test_engine_logs.py, by the same vLLM start that checks the engine's logs.


def test_the_in_process_engine_core_is_asked_for_while_building_only(monkeypatch):
    """While a CPU engine is built, vLLM is asked to keep its engine core in this process; afterwards the
    environment is as it was (what the build wrote is gone), and a user's own setting is never touched."""
    from stepdata.generation.vllm_backend import _engine_core_in_process

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setenv("STEPDATA_KEPT", "1")
    before = dict(os.environ)
    with _engine_core_in_process(True):
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        os.environ["LD_PRELOAD"] = "libsomething.so"  # as vLLM's CPU worker does for its own processes
        os.environ.pop("STEPDATA_KEPT")
    assert dict(os.environ) == before
    with _engine_core_in_process(False):
        assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the user's choice wins
    with _engine_core_in_process(True):
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"


def test_cpu_engine_settings_run_one_worker_in_process_unless_parallel_or_asked_otherwise(tmp_path):
    from stepdata.generation.vllm_backend import engine_settings

    model = str(model_folder(tmp_path, {"dtype": "float32"}))
    assert engine_settings(model, cuda=False)["distributed_executor_backend"] == "uni"
    assert "distributed_executor_backend" not in engine_settings(model, cuda=False, tensor_parallel_size=2)
    assert "distributed_executor_backend" not in engine_settings(model, cuda=True)
    assert engine_settings(model, cuda=False, distributed_executor_backend="mp")["distributed_executor_backend"] == "mp"
