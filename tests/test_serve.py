"""`stepdata serve`: vLLM's OpenAI server with our backend's settings, called by our openai backend (slow)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import requires_vllm, user_shell_environment
from generation_checks import chat

from stepdata.generation import SamplingConfig, make_generator

REPO = Path(__file__).resolve().parents[1]

pytestmark = [requires_vllm, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_print_command_carries_the_backend_settings(smollm2_dir):
    """On CPU: a bounded KV cache (not 92% of RAM), eager, no chunked prefill; the model's own dtype."""
    line = subprocess.run([sys.executable, str(REPO / "cli.py"), "serve", str(smollm2_dir), "--port", "8001",
                           "--print-command"], capture_output=True, text=True, check=True, timeout=300).stdout
    assert "vllm.entrypoints" in line and "--port 8001" in line and "--host 127.0.0.1" in line
    assert "--dtype bfloat16" in line  # SmolLM2's config says bfloat16
    import torch

    if not torch.cuda.is_available():
        assert "--kv-cache-memory-bytes 2147483648" in line and "--enforce-eager" in line
        assert "--no-enable-chunked-prefill" in line


def test_serve_then_sample_with_the_openai_backend_then_stop(smollm2_dir, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    command = [sys.executable, str(REPO / "cli.py"), "serve", str(smollm2_dir), "--port", str(port),
               "--served-model-name", "smollm2", "--engine-option", "max_model_len=2048"]
    with log_path.open("w") as log:
        # its own process group: the server it starts joins it, and the clean-up below can reach both
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=user_shell_environment())  # not the engine log levels of earlier tests
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 480
        while "ready:" not in log_path.read_text():
            assert process.poll() is None, f"stepdata serve exited with {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"the server did not come up in time:\n{log_path.read_text()}"
            time.sleep(2)
        assert f"--base-url {base} --model smollm2" in log_path.read_text()
        with make_generator("openai", "smollm2", base_url=base) as generator:
            results = generator.generate([chat("a", "What is 7 + 5?", "Step 1:"), chat("b", "What is 3 * 3?")],
                                         SamplingConfig(n=2, temperature=0.8, max_tokens=16, seed=0))
        assert all(r.ok for r in results), [r.error for r in results]
        assert [len(r.completions) for r in results] == [2, 2]
        assert results[0].prompt_tokens and results[0].usage_completion_tokens
        process.send_signal(signal.SIGTERM)  # to `stepdata serve` only: it passes it on to the server
        assert process.wait(timeout=120) is not None
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{base}/models", timeout=2)
        text = log_path.read_text()  # the engines stay quiet, from start-up to shutdown
        assert "Triton" not in text and "leaked" not in text and "force killing" not in text, text[-3000:]
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group (nothing, normally)
        except ProcessLookupError:
            pass
        process.wait()


def test_the_printed_server_command_never_shows_an_api_key():
    from stepdata.generation.serve import printable

    line = printable(["python", "-m", "x", "--api-key", "sk-secret123", "--port", "8000", "--api-key=sk-other"])
    assert "sk-secret123" not in line and "sk-other" not in line and "--port 8000" in line
