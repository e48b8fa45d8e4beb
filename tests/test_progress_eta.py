"""The ETA on progress lines: no number before the run has shown its pace, then the pace of real work."""

import io

import pytest

from stepdata.generation.progress import (
    EngineProgressBar,
    EtaEstimator,
    Progress,
    format_duration,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_concurrent_requests_are_not_charged_the_first_latency():
    """643 requests, 64 in flight, 10 s each: the first answer after 10 s must not predict 6420 s."""
    clock = FakeClock()
    eta = EtaEstimator(643, baseline="first", clock=clock)
    clock.tick(10.0)
    eta.update(1)
    assert eta.eta() is None and eta.describe() == "ETA unknown"
    for _ in range(63):  # the rest of the first wave lands within a second
        clock.tick(1 / 63)
        eta.update(1)
    # 63 in 1 s is 10% of the work: enough evidence; the rate is the wave's, not 1 per 10 s
    assert eta.eta() is not None
    # steady state: 6.4 requests/s
    for _ in range(100):
        clock.tick(10 / 64)
        eta.update(1)
    left = 643 - 164
    assert eta.eta() == pytest.approx(left / eta.rate())
    assert 20 < eta.eta() < 120, eta.eta()  # about 75 s at the observed pace, nowhere near 6423 s


def test_no_estimate_until_enough_work_or_time():
    clock = FakeClock()
    eta = EtaEstimator(1000, baseline="start", clock=clock, min_items=2, min_fraction=0.03, min_seconds=5.0)
    clock.tick(0.5)
    eta.update(1)
    assert eta.eta() is None  # one item
    clock.tick(0.5)
    eta.update(1)
    assert eta.eta() is None  # 2 items in 1 s: 0.2% of the work, 1 s of observation
    clock.tick(4.5)
    eta.update(1)
    assert eta.eta() == pytest.approx(997 / (3 / 5.5))  # 5.5 s observed: the pace is known
    fast = EtaEstimator(100, baseline="start", clock=clock)
    clock.tick(1.0)
    fast.update(4)  # 4% of the work in 1 s
    assert fast.eta() == pytest.approx(96 / 4.0)


def test_skipped_work_shortens_the_run_but_not_the_pace():
    """A resumed stage finds 900 of 1000 units done in no time; the rest runs at 1 unit/s."""
    clock = FakeClock()
    eta = EtaEstimator(1000, baseline="start", clock=clock)
    clock.tick(2.0)  # reading the manifest
    eta.skip(900)
    assert eta.eta() is None  # nothing measured yet: skipped units say nothing of the pace
    for _ in range(10):
        clock.tick(1.0)
        eta.update(1)
    assert eta.eta() == pytest.approx(90.0)  # 90 left at 1/s (not 90 * 12 s / 910 units)


def test_done_is_zero_and_durations_read_well():
    clock = FakeClock()
    eta = EtaEstimator(3, clock=clock)
    eta.update(3)
    assert eta.eta() == 0.0
    assert [format_duration(s) for s in (4.2, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_progress_lines_say_unknown_first_then_a_number():
    clock = FakeClock()
    out = io.StringIO()
    progress = Progress("generate[x]", 100, every=0.0, stream=out, clock=clock)
    clock.tick(10)
    progress.update(1, 50)
    for _ in range(20):
        clock.tick(0.5)
        progress.update(1, 50)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("generate[x]: 1/100 requests") and lines[0].endswith("ETA unknown")
    assert lines[-1].startswith("generate[x]: 21/100 requests") and "ETA 40s" in lines[-1]  # 79 left at 2/s


def test_engine_progress_bar_feeds_progress_per_request():
    """vLLM's generate calls its bar's update with a finished request's sample count."""
    out = io.StringIO()
    progress = Progress("generate[vllm]", 3, every=0.0, stream=out)
    bar = EngineProgressBar(total=3, desc="Processed prompts", progress=progress, samples_per_request=4)
    assert bar.format_dict["elapsed"] > 0
    for _ in range(3):
        bar.postfix = "est. speed ..."
        bar.update(4)
    bar.refresh()
    bar.close()
    assert progress.done == 3 and out.getvalue().splitlines()[-1].startswith("generate[vllm]: 3/3 requests")
    items = list(EngineProgressBar(["a", "b"], desc="Rendering prompts", progress=progress))
    assert items == ["a", "b"] and progress.done == 3


def test_stage_lines_leave_resumed_batches_out_of_the_pace(tmp_path, capsys):
    """StageRun's line after batches a resumed run found done: no ETA yet (they took no time)."""
    import time

    from stepdata.pipeline import StageRun
    from stepdata.pipeline.run import _Progress

    run = StageRun("sample", tmp_path / "out.parquet", "rollouts", {"x": 1}, key_column="problem_id", batch_size=2)
    start = time.monotonic() - 30.0  # 30 s spent on two finished batches found in the manifest
    tokens = iter([0, 0, 120, 200])
    progress = _Progress(run, 10, start, lambda: next(tokens))
    progress.batch(2, skipped=True)
    progress.batch(2, skipped=True)
    progress.batch(2)  # one processed batch: 2 units is 33% of what is left to do
    progress.batch(4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("ETA unknown") and lines[1].endswith("ETA unknown")
    assert "ETA " in lines[2] and "unknown" not in lines[2]
    eta = lines[2].rsplit("ETA ", 1)[1]
    # the processed batch took next to no time: ETA about 0 s, where elapsed/done charged 5 s a unit (20 s)
    assert eta.endswith("s") and "m" not in eta and int(eta[:-1]) <= 2, lines[2]
    assert lines[3].endswith("ETA 0s")
