"""Calls with a hard time bound: run them in worker processes and kill overruns.

Symbolic answer checks can hang (``9^{9^{9^9}}`` asks sympy for a number with
more digits than atoms in the universe). ``signal.alarm`` only works in the main
thread and cannot interrupt C code, so instead each call is sent to a worker
subprocess; if no answer comes back in time the worker is killed and replaced,
and the caller gets a "timeout" result. This holds whatever the caller is: the
main thread, a thread pool, a forked or a daemonic process (workers are plain
subprocesses, which daemonic multiprocessing workers may start).

Protocol: length-prefixed pickles over the worker's stdin/stdout. Only this
module talks to its own workers, so the pickles are trusted.

Workers die with the process that started them, even when it is killed with
SIGKILL in the middle of a check (a worker busy in Math-Verify reads no input and
would otherwise spin on for minutes): on Linux each worker asks for a parent-death
signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and everywhere a thread in the worker
waits on a pipe whose only writer is the parent and exits when it closes. The
signal fires when the *thread* that started the worker ends, so every worker is
started from one long-lived thread (:class:`_Spawner`), never from the short-lived
threads of a ``check_answers`` pool.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# what a worker is told about its parent (see worker_main): the parent's pid, and a pipe only the parent writes to
PARENT_PID_VARIABLE = "STEPDATA_WORKER_PARENT_PID"
PARENT_PIPE_VARIABLE = "STEPDATA_WORKER_PARENT_FD"


class _Spawner:
    """Starts processes from one long-lived thread, so a parent-death signal outlives the caller's thread.

    Linux sends ``PR_SET_PDEATHSIG`` when the thread that forked the child ends, not the
    process: a worker started from a ``ThreadPoolExecutor`` thread would be killed when the
    pool shuts down. This thread lives as long as the process (a forked child starts its own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def reset(self) -> None:
        """In a forked child: the parent's thread is not there (and its lock may be held)."""
        self._lock = threading.Lock()
        self._requests, self._thread, self._pid = None, None, 0

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._requests = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._serve, args=(self._requests,), daemon=True,
                                                name="stepdata-worker-spawner")
                self._thread.start()
                self._pid = os.getpid()
            requests = self._requests
        box: dict[str, Any] = {}
        done = threading.Event()
        requests.put((args, kwargs, box, done))  # type: ignore[union-attr]
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["process"]

    @staticmethod
    def _serve(requests: queue.SimpleQueue) -> None:
        while True:
            args, kwargs, box, done = requests.get()
            try:
                box["process"] = subprocess.Popen(args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                box["error"] = exc
            finally:
                done.set()


_spawner = _Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_spawner.reset)


@dataclass(frozen=True)
class CallResult:
    """What one bounded call produced: a value, a time-out, or an error."""

    status: str  # "ok" | "timeout" | "error"
    value: Any = None
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class WorkerDied(RuntimeError):
    """The worker exited or wrote garbage instead of answering."""


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, remaining)
        if not chunk:
            raise WorkerDied("worker closed its output")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_frame(stream: Any, obj: Any) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_frame(fd: int, deadline: float | None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


class _Worker:
    """One subprocess running :func:`stepdata.answers.worker_main.serve`."""

    def __init__(self, preload: Sequence[str], startup_timeout: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        env[PARENT_PID_VARIABLE] = str(os.getpid())
        # the worker's end of a pipe nobody writes to: it reads end-of-file when this process is gone
        self.lifeline: int | None = None
        pass_fds: tuple[int, ...] = ()
        if os.name == "posix":
            theirs, self.lifeline = os.pipe()
            env[PARENT_PIPE_VARIABLE] = str(theirs)
            pass_fds = (theirs,)
        try:
            self.process = _spawner.popen(
                [sys.executable, "-m", "stepdata.answers.worker_main", *preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=pass_fds,
            )
        except BaseException:
            self._close_lifeline()
            raise
        finally:
            for fd in pass_fds:
                os.close(fd)
        self.fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        try:
            ready = _read_frame(self.fd, time.monotonic() + startup_timeout)
        except (TimeoutError, WorkerDied, EOFError, pickle.UnpicklingError) as exc:
            self.kill()
            raise WorkerDied(f"worker did not start: {exc!r}") from None
        if ready != "ready":
            self.kill()
            raise WorkerDied(f"worker sent {ready!r} instead of 'ready'")

    def call(self, func: Any, args: tuple, timeout: float) -> Any:
        _write_frame(self.process.stdin, (func, args))
        return _read_frame(self.fd, time.monotonic() + timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self.lifeline is not None:
            try:
                os.close(self.lifeline)
            except OSError:
                pass
            self.lifeline = None


class BoundedPool:
    """Up to ``max_workers`` killable worker processes shared by any number of threads.

    ``preload`` names modules the workers import before they report ready, so
    their import time never counts against a call's time bound.
    """

    def __init__(self, max_workers: int = 2, preload: Sequence[str] = (), startup_timeout: float = 120.0):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.preload = tuple(preload)
        self.startup_timeout = startup_timeout
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._pid = os.getpid()
        self.timeouts = 0
        self.restarts = 0

    def _reset_after_fork(self) -> None:
        # A forked child must not share its parent's workers (their pipes are the parent's).
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._idle = []
            self._slots = threading.BoundedSemaphore(self.max_workers)
            self._lock = threading.Lock()

    def call(self, func: Any, *args: Any, timeout: float) -> CallResult:
        """Run ``func(*args)`` in a worker; never takes much longer than ``timeout``."""
        self._reset_after_fork()
        start = time.monotonic()
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                try:
                    worker = _Worker(self.preload, self.startup_timeout)
                except WorkerDied as exc:
                    return CallResult("error", error=str(exc), seconds=time.monotonic() - start)
            begun = time.monotonic()
            try:
                status, payload = worker.call(func, args, timeout)
            except TimeoutError:
                worker.kill()
                self.timeouts += 1
                self.restarts += 1
                return CallResult("timeout", error=f"no result within {timeout:g}s", seconds=time.monotonic() - begun)
            except (WorkerDied, EOFError, OSError, pickle.UnpicklingError, struct.error) as exc:
                worker.kill()
                self.restarts += 1
                return CallResult("error", error=f"worker failed: {exc!r}", seconds=time.monotonic() - begun)
            with self._lock:
                self._idle.append(worker)
            elapsed = time.monotonic() - begun
            if status == "ok":
                return CallResult("ok", value=payload, seconds=elapsed)
            return CallResult("error", error=str(payload), seconds=elapsed)

    def close(self) -> None:
        """Stop all idle workers (busy ones stop when their call returns)."""
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_default_pools: dict[tuple[str, ...], BoundedPool] = {}
_default_lock = threading.Lock()


def shared_pool(preload: Sequence[str]) -> BoundedPool:
    """The process-wide pool for workers that preload ``preload`` (created on first use)."""
    key = tuple(preload)
    with _default_lock:
        pool = _default_pools.get(key)
        if pool is None:
            workers = int(os.environ.get("STEPDATA_CHECK_WORKERS", "0")) or max(1, min(4, os.cpu_count() or 1))
            pool = _default_pools[key] = BoundedPool(max_workers=workers, preload=key)
        return pool


@atexit.register
def _close_shared_pools() -> None:
    for pool in list(_default_pools.values()):
        pool.close()
