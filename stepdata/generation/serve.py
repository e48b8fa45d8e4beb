"""``stepdata serve``: vLLM's OpenAI-compatible server with the settings of our vLLM backend.

Started by hand on a CPU machine, ``python -m vllm.entrypoints.openai.api_server
--model DIR`` fails: vLLM reserves 92% of RAM for its KV cache and refuses to start
when that much is not free; it also compiles for minutes, splits seeded prompts
across prefill chunks (which kills vLLM 0.32's CPU engine) and runs a float32
model in bfloat16. The offline backend already knows all of that
(:func:`~stepdata.generation.vllm_backend.engine_settings`), so the server gets the
same settings, turned into its flags, and the openai backend talking to it samples
what the offline backend would.

The server runs as a child process we watch: its readiness is announced once
``/v1/models`` answers (with the engines quiet, vLLM itself says nothing), and a
SIGTERM, SIGINT or SIGHUP sent to us is passed on to it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from stepdata.generation.dtypes import cuda_available
from stepdata.generation.engine_logs import engines_quiet
from stepdata.generation.vllm_backend import (
    SERVER_MODULE,
    engine_settings,
    prepare_cpu_environment,
    server_arguments,
)


def server_command(model: str, *, host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
                   through_stepdata: bool = True, **options: Any) -> tuple[list[str], dict[str, Any]]:
    """The server's command line and the engine settings it carries (``options`` as for the vllm backend).

    Sets the environment the CPU engine reads (it is inherited by the server). With
    quiet engines, uvicorn reports only warnings and no access line per request.
    ``through_stepdata`` runs vLLM's server module from :mod:`stepdata.generation.vllm_server`
    (which quiets its early warnings); False gives the plain vLLM command, for people
    who want to run it themselves.
    """
    cuda = cuda_available()
    if not cuda:
        prepare_cpu_environment()
    settings = engine_settings(model, cuda=cuda, **options)
    args = server_arguments(model, settings, host=host, port=port, served_model_name=served_model_name)
    if engines_quiet():
        args += ["--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
    module = "stepdata.generation.vllm_server" if through_stepdata else SERVER_MODULE
    return [sys.executable, "-m", module, *args], settings


_SECRET_FLAGS = ("--api-key",)


def printable(command: list[str]) -> str:
    """The command as a shell line, with the vLLM environment it needs in front; secrets masked.

    The line is printed and logged, so a key passed as ``--engine-option api_key=...``
    must not appear in it (vLLM also reads the key from ``$VLLM_API_KEY``).
    """
    env = [f"{k}={os.environ[k]}" for k in ("VLLM_CPU_NUM_OF_RESERVED_CPU",) if k in os.environ]
    shown = list(command)
    for i, part in enumerate(shown):
        if part in _SECRET_FLAGS and i + 1 < len(shown):
            shown[i + 1] = "<redacted>"
        elif part.startswith(tuple(f"{flag}=" for flag in _SECRET_FLAGS)):
            shown[i] = part.split("=", 1)[0] + "=<redacted>"
    return shlex.join([*env, *shown])


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float | None = None, every: float = 1.0) -> bool:
    """Poll ``url`` until it answers (True), the process exits or ``timeout`` seconds pass (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            pass
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(every)
    return False


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
          echo: Callable[[str], None] = print, **options: Any) -> int:
    """Run the server until it stops (or we are told to stop); returns its exit status."""
    command, settings = server_command(model, host=host, port=port, served_model_name=served_model_name, **options)
    name = served_model_name or model
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{local}:{port}/v1"
    echo(f"starting vLLM's OpenAI server for {model} in {settings['dtype']} on {host}:{port}: {printable(command)}")
    process = subprocess.Popen(command)

    def forward(signum: int, _frame: Any) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        if wait_until_ready(f"{base_url}/models", process):
            echo(f"ready: use it with --backend openai --base-url {base_url} --model {name}")
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # we are leaving for another reason (an exception): do not orphan it
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
