"""Entry point of a bounded-call worker process (see :mod:`stepdata.answers.bounded`).

Run as ``python -m stepdata.answers.worker_main MODULE...``: imports the named
modules, says "ready", then answers calls until its input closes. Anything a
library prints goes to stderr, so the answer channel on stdout stays clean.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys

from stepdata.answers.bounded import _HEADER
from stepdata.answers.bounded import _write_frame as _send


def _read(inp, size: int) -> bytes | None:
    data = inp.read(size)
    return data if data and len(data) == size else None


def serve(preload: list[str]) -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for module in preload:
        importlib.import_module(module)
    _send(out, "ready")
    inp = sys.stdin.buffer
    while True:
        header = _read(inp, _HEADER.size)
        if header is None:
            return
        (size,) = _HEADER.unpack(header)
        body = _read(inp, size)
        if body is None:
            return
        func, args = pickle.loads(body)
        try:
            result = ("ok", func(*args))
        except BaseException as exc:  # noqa: BLE001 - report every failure to the caller
            result = ("error", f"{type(exc).__name__}: {exc}")
        _send(out, result)


if __name__ == "__main__":
    serve(sys.argv[1:])
