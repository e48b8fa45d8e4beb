"""Entry point of a bounded-call worker process (see :mod:`stepdata.answers.bounded`).

Run as ``python -m stepdata.answers.worker_main MODULE...``: imports the named
modules, says "ready", then answers calls until its input closes. Anything a
library prints goes to stderr, so the answer channel on stdout stays clean.

A worker never outlives its parent, even one killed with SIGKILL while the worker
is deep in a check that reads no input: on Linux it asks the kernel for SIGKILL
when its parent dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes), and on any
system a thread waits on the pipe the parent keeps open for it and ends the
process when that pipe closes.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import threading

from stepdata.answers.bounded import _HEADER, PARENT_PID_VARIABLE, PARENT_PIPE_VARIABLE
from stepdata.answers.bounded import _write_frame as _send

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ask_to_die_with_parent() -> bool:
    """Linux: SIGKILL this process when its parent dies. False where the kernel offers no such signal."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_closed(fd: int) -> None:
    """Block on the parent's pipe; its end of file means the parent is gone: end this process at once."""
    while True:
        try:
            if os.read(fd, 1):
                continue  # nobody writes to it; ignore anything that comes
        except InterruptedError:
            continue
        except OSError:
            pass
        os._exit(1)


def die_with_parent() -> None:
    """Arm both guards (see the module doc); exit now if the parent died before they were armed."""
    ask_to_die_with_parent()
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and os.getppid() != int(parent):
        os._exit(1)  # the parent died while this process was starting
    fd = os.environ.get(PARENT_PIPE_VARIABLE)
    if fd:
        threading.Thread(target=_exit_when_closed, args=(int(fd),), daemon=True, name="parent-watch").start()


def _read(inp, size: int) -> bytes | None:
    data = inp.read(size)
    return data if data and len(data) == size else None


def serve(preload: list[str]) -> None:
    die_with_parent()
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
