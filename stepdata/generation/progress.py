"""Progress lines and end-of-run statistics for generation calls.

Long sampling runs must show they are alive: a line on stderr at most every few
seconds (requests done, tokens/s, ETA) and a summary at the end, also kept on the
generator (``generator.last_stats``) for run summaries.

The ETA comes from :class:`EtaEstimator`, which only gives a number once the run
has shown its pace (see there): an early guess from one finished request of many
that run concurrently said 6423 s where the run took minutes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO


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


def format_duration(seconds: float) -> str:
    """``42s``, ``5m30s``, ``2h05m``: an ETA of hours read as seconds is hard to take in."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EtaEstimator:
    """Time left, from the pace of the work this run has actually done.

    Dividing the elapsed time by the items done misleads in two common cases, so
    the rate is measured differently:

    - Work that runs concurrently (a server with 64 requests in flight, vLLM's
      continuous batching) finishes its first item only after a whole latency, and
      then many at a time. ``baseline="first"`` measures the rate from the first
      completion on, so the pipeline's fill time is not charged to every item.
      Work done one batch after another (a stage's batches) uses
      ``baseline="start"``: there the first batch's time is the honest unit cost.
    - Work that costs nothing (batches a resumed run finds done) would make the
      run look fast: :meth:`skip` takes it off what remains without entering the rate.

    No number is given (``eta()`` is None, the text says "ETA unknown") until
    there is evidence: at least ``min_items`` items counted in the rate, and either
    ``min_fraction`` of the work or ``min_seconds`` of observation behind them.
    ``clock`` is injectable so tests can drive time; ``started`` (a ``clock()`` value)
    dates the start of work begun before the estimator was made.
    """

    def __init__(
        self,
        total: int,
        *,
        baseline: Literal["first", "start"] = "first",
        clock: Callable[[], float] = time.monotonic,
        min_items: int = 2,
        min_fraction: float = 0.03,
        min_seconds: float = 5.0,
        started: float | None = None,
    ) -> None:
        if baseline not in ("first", "start"):
            raise ValueError(f"baseline must be 'first' or 'start', not {baseline!r}")
        self.total, self.baseline, self.clock = total, baseline, clock
        self.min_items, self.min_fraction, self.min_seconds = min_items, min_fraction, min_seconds
        self.done = 0  # items finished, counted or skipped
        self.skipped = 0
        self.counted = 0  # items whose time is in the rate
        self._since: float | None = (clock() if started is None else started) if baseline == "start" else None

    def skip(self, items: int) -> None:
        """``items`` finished at no cost (found done): they shorten the run but say nothing of its pace."""
        self.done += items
        self.skipped += items
        if self.baseline == "start" and self.counted == 0:
            self._since = self.clock()  # the measured work starts after the free part

    def update(self, items: int = 1) -> None:
        """``items`` finished just now."""
        self.done += items
        if self._since is None:  # baseline "first": this completion opens the window, it does not enter it
            self._since = self.clock()
            return
        self.counted += items

    def rate(self) -> float | None:
        """Items per second over the observed window, or None before there is evidence."""
        if self._since is None or self.counted < self.min_items:
            return None
        seconds = self.clock() - self._since
        if seconds <= 0:
            return None
        work = max(self.total - self.skipped, 1)
        if self.counted < self.min_fraction * work and seconds < self.min_seconds:
            return None
        return self.counted / seconds

    def eta(self) -> float | None:
        """Seconds left, 0 when all is done, None while the pace is unknown."""
        if self.done >= self.total:
            return 0.0
        rate = self.rate()
        return None if rate is None else (self.total - self.done) / rate

    def describe(self) -> str:
        eta = self.eta()
        return "ETA unknown" if eta is None else f"ETA {format_duration(eta)}"


class Progress:
    """Prints ``done/total`` with tokens/s and an ETA, throttled; thread-safe."""

    def __init__(self, label: str, total: int, enabled: bool = True, every: float = 5.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.enabled, self.every = label, total, enabled, every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.tokens = 0
        self.start = clock()
        self.eta = EtaEstimator(total, baseline="first", clock=clock)
        self._last: float | None = None
        self._lock = threading.Lock()

    def update(self, done: int = 1, tokens: int = 0) -> None:
        """``done`` requests finished with ``tokens`` generated tokens between them."""
        with self._lock:
            self.done += done
            self.tokens += tokens
            if done:
                self.eta.update(done)
            now = self.clock()
            due = self._last is None or now - self._last >= self.every
            if self.enabled and done and (due or self.done == self.total):
                self._last = now
                elapsed = now - self.start
                # engines that report tokens only at the end (vLLM's live count) show none until then
                rate = f", {self.tokens / elapsed:.1f} tok/s" if self.tokens and elapsed > 0 else ""
                print(f"{self.label}: {self.done}/{self.total} requests{rate}, {self.eta.describe()}",
                      file=self.stream, flush=True)

    def add_tokens(self, tokens: int) -> None:
        """Tokens learned after their requests were counted (no line printed)."""
        with self._lock:
            self.tokens += tokens


class EngineProgressBar:
    """Stands in for the tqdm bar vLLM's ``LLM.generate`` draws (its ``use_tqdm`` accepts a factory).

    vLLM's bar repaints a terminal line and writes nothing useful to a log file;
    this object takes its updates (one per finished request, counting that
    request's samples) into our :class:`Progress`, so a vLLM run prints the same
    throttled lines as the other engines. Built with an iterable (vLLM's
    "Rendering prompts" pass) it only passes the items through.
    """

    def __init__(self, iterable: Any = None, *, progress: Progress, samples_per_request: int = 1,
                 **_tqdm_options: Any) -> None:
        self.iterable, self.progress = iterable, progress
        self.samples_per_request = max(samples_per_request, 1)
        self.n = 0
        self.postfix: Any = None
        self._start = time.monotonic()
        self._pending = 0

    def __iter__(self) -> Any:
        return iter(self.iterable if self.iterable is not None else ())

    def __len__(self) -> int:
        return len(self.iterable) if self.iterable is not None else 0

    @property
    def format_dict(self) -> dict[str, float]:
        # vLLM divides token counts by this to draw its speed postfix: never zero
        return {"elapsed": max(time.monotonic() - self._start, 1e-6), "n": self.n}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._pending += n
        requests, self._pending = divmod(self._pending, self.samples_per_request)
        if requests:
            self.progress.update(requests)

    def refresh(self) -> None:
        """Nothing to repaint."""

    def close(self) -> None:
        """Nothing to release."""
