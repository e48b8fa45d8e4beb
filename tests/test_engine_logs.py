"""Engine logs: a vLLM start prints our lines only, unless -v; the quiet start also shows the engine keeps the
float32 tiny model in float32 (slow: two vLLM starts on CPU, with the tiny test model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires_vllm, user_shell_environment

REPO = Path(__file__).resolve().parents[1]
# our own stderr lines: progress (generate[vllm]: 1/1 requests ...) and the end-of-call summary (vllm: 1 requests ...)
OURS = re.compile(r"^(generate\[vllm\]: \d+/\d+ requests|vllm: \d+ requests)")

pytestmark = [requires_vllm, pytest.mark.slow]


def generate(model: Path, *flags: str) -> subprocess.CompletedProcess:
    env = user_shell_environment()
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *flags, "generate", "--backend", "vllm",
                           "--model", str(model), "--question", "What is 7 + 5?", "--max-tokens", "8"],
                          capture_output=True, text=True, timeout=900, env=env, check=False)


def test_engines_are_quiet_unless_verbose(tiny_model_dir):
    quiet = generate(tiny_model_dir)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    reply = json.loads(quiet.stdout)
    assert reply["completions"], "stdout holds the command's JSON and nothing else"
    # the same start checks the dtype: vLLM's own choice ("auto") would run the float32 tiny model in bfloat16
    assert reply["engine"] == {"backend": "vllm", "model": str(tiny_model_dir), "dtype": "float32"}
    lines = quiet.stderr.splitlines()
    noise = [line for line in lines if not OURS.match(line)]
    assert len(noise) < 10, "\n".join(noise)
    assert any(line.startswith("vllm: 1 requests") for line in lines)  # our summary stays
    assert not any("force killing" in line or "Triton" in line for line in lines)

    loud = generate(tiny_model_dir, "-v")
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert json.loads(loud.stdout)["completions"], "the engine's logs go to stderr, not into the JSON"
    engine_lines = [line for line in loud.stderr.splitlines() if not OURS.match(line)]
    assert len(engine_lines) >= 10 and any("WARNING" in line for line in engine_lines), loud.stderr[-3000:]
