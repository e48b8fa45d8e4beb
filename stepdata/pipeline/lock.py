"""One writer per output shard: a lock file beside the parts, held for the whole run.

Two runs writing one output would mix their batches (a table labelled seed 1 holding
a batch made with seed 0), so a run takes ``OUT.parts/lock-<shard>`` before it looks
at the output folder and lets go when it ends. The lock is an ``flock`` on that file
(the kernel drops it when its process dies, even by SIGKILL, so a killed run never
blocks the next one), and the file records who holds it (pid, host, start, command):

- a second run finds the lock held and is refused, naming the holder;
- a run that finds the file of a run that is gone (its pid no longer alive on this
  host) says it takes over that stale lock, and does;
- on a file system without ``flock`` (some network ones) the record alone decides:
  a live pid on this host, or any pid on another host, holds it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class OutputLocked(RuntimeError):
    """Another run is writing this output shard."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def describe_holder(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    command = holder.get("command") or "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when} ({command})"


class OutputLock:
    """The lock at ``path``, guarding ``what`` (named in messages); reentrant within one object."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path, self.what = Path(path), what
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- the record ----------------------------------------------------------------------------

    @staticmethod
    def _record() -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:500]}

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            raw = os.pread(fd, 65536, 0)
            holder = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _refuse(self, holder: dict[str, Any] | None, note: str = "") -> OutputLocked:
        who = describe_holder(holder) if holder else "a run that has not yet said who it is"
        return OutputLocked(
            f"{self.what} is being written by another run: {who}{note}. Two runs on one output would mix their "
            f"batches; wait for that run to end (or stop it) and run this command again. (lock file: {self.path})")

    # -- acquire / release ---------------------------------------------------------------------

    def acquire(self) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                note = ""
                if holder and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                        and not pid_alive(holder["pid"]):
                    note = " (that pid has ended, but a process it started still holds the lock)"
                raise self._refuse(holder, note) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                flocked = False  # a file system without flock: the record alone decides
            try:
                if flocked and not self._same_file(fd):
                    os.close(fd)  # the holder released (unlinked) it between our open and our lock: again
                    continue
                holder = self._read(fd)
                if holder and holder.get("pid") != os.getpid():
                    self._take_over(holder, flocked)
                record = json.dumps(self._record()).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._depth = fd, 1
            return

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _take_over(self, holder: dict[str, Any], flocked: bool) -> None:
        pid, host = holder.get("pid"), holder.get("host")
        here = host == socket.gethostname()
        if not flocked and (not here or (isinstance(pid, int) and pid_alive(pid))):
            raise self._refuse(holder, "" if here else " (another host: this file system has no flock to ask it; "
                                                       "delete the lock file if you know that run has ended)")
        if here and isinstance(pid, int) and pid_alive(pid):
            why = "its process no longer holds it"
        elif here:
            why = "not running: a killed run"
        else:
            why = "on another host; the lock was free"
        log.warning("%s: taking over the stale lock %s of pid %s on %s (%s)", self.what, self.path, pid, host, why)

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        try:
            if self._same_file(fd):
                self.path.unlink(missing_ok=True)  # while still locked: a waiting run then locks a new file
        finally:
            os.close(fd)
