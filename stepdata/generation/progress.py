"""Progress lines and end-of-run statistics for generation calls.

Long sampling runs must show they are alive: a line on stderr at most every few
seconds (requests done, tokens/s, ETA) and a summary at the end, also kept on the
generator (``generator.last_stats``) for run summaries.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO


@dataclass
class GenerationStats:
    """Counts for one generate call.

    ``completion_tokens`` adds up each result's ``completion_tokens_total`` (the engine's
    or server's usage where reported), not the per-sample counts, which an HTTP server
    with n > 1 leaves unknown.
    """

    backend: str
    requests: int = 0
    failed_requests: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None
    retries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"tokens_per_second": round(self.tokens_per_second, 2)}

    def summary(self) -> str:
        cached = "" if self.cached_prompt_tokens is None else f", {self.cached_prompt_tokens} prompt tokens from cache"
        failed = f", {self.failed_requests} FAILED" if self.failed_requests else ""
        return (f"{self.backend}: {self.requests} requests{failed}, {self.samples} samples, "
                f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens{cached}, "
                f"{self.seconds:.1f}s, {self.tokens_per_second:.1f} tok/s")


class Progress:
    """Prints ``done/total`` with tokens/s and ETA, throttled; thread-safe."""

    def __init__(self, label: str, total: int, enabled: bool = True, every: float = 5.0, stream: TextIO | None = None):
        self.label, self.total, self.enabled, self.every = label, total, enabled, every
        self.stream = stream or sys.stderr
        self.done = 0
        self.tokens = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, done: int = 1, tokens: int = 0) -> None:
        with self._lock:
            self.done += done
            self.tokens += tokens
            now = time.monotonic()
            if self.enabled and (now - self._last >= self.every or self.done == self.total):
                self._last = now
                elapsed = now - self.start
                rate = self.tokens / elapsed if elapsed > 0 else 0.0
                eta = (self.total - self.done) * elapsed / self.done if self.done else float("nan")
                print(f"{self.label}: {self.done}/{self.total} requests, {rate:.1f} tok/s, ETA {eta:.0f}s",
                      file=self.stream, flush=True)
