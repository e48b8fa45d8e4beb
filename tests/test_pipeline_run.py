"""Run machinery: a stage killed with SIGKILL and restarted ends with exactly the uninterrupted rows."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer

from stepdata import read_table

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "cli.py")]

pytestmark = requires_torch


def sample_args(model_dir, out, *extra):
    return [*CLI, "sample", "embedded:16", "--backend", "hf", "--model", str(model_dir), "--n", "2",
            "--max-tokens", "40", "--batch-size", "2", "--out", str(out), *extra]


def recorded_batches(out: Path) -> int:
    manifests = list(out.with_name(out.name + ".parts").glob("manifest-*.json"))
    if not manifests:
        return 0
    try:
        return len(json.loads(manifests[0].read_text())["batches"])
    except (json.JSONDecodeError, OSError):
        return 0


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("rollout_id").reset_index(drop=True)[["rollout_id", "completion", "pred_answer", "correct"]]


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_gives_the_same_rows(tiny_model_dir, tmp_path):
    reference = tmp_path / "reference.parquet"
    subprocess.run(sample_args(tiny_model_dir, reference), check=True, capture_output=True, timeout=300)
    expected = comparable(read_table(reference))
    assert len(expected) == 32 and expected.rollout_id.is_unique

    out = tmp_path / "killed.parquet"
    for kill_after in (1, 3, 6):  # batches recorded before the kill lands (8 in all)
        process = subprocess.Popen(sample_args(tiny_model_dir, out), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while recorded_batches(out) < kill_after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not out.exists(), "the final table appears only when every batch is done"
    finished = subprocess.run(sample_args(tiny_model_dir, out), check=True, capture_output=True, text=True, timeout=300)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["batches_skipped"] >= 6 and summary["batches_total"] == 8
    assert "wrote 32 rollouts" in finished.stdout
    pd.testing.assert_frame_equal(comparable(read_table(out)), expected)


def test_changed_config_is_refused_unless_told(tiny_model_dir, tmp_path):
    out = tmp_path / "r.parquet"
    subprocess.run(sample_args(tiny_model_dir, out), check=True, capture_output=True, timeout=300)
    changed = sample_args(tiny_model_dir, out)
    changed[changed.index("--n") + 1] = "3"
    refused = subprocess.run(changed, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "another config" in refused.stderr
    subprocess.run([*changed, "--overwrite"], check=True, capture_output=True, timeout=300)
    assert len(read_table(out)) == 48


def test_failed_requests_are_rows_with_errors_and_are_retried_on_resume(tmp_path, monkeypatch):
    from stepdata import make_problems

    problems = make_problems(4, seed=9)
    problems_path = tmp_path / "problems.parquet"
    from stepdata import write_table

    write_table(problems, problems_path, "problems")
    doomed = problems.question[1]
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer({doomed: ["400"]}) as server:
        args = [*CLI, "sample", str(problems_path), "--backend", "openai", "--model", "m", "--base-url",
                server.base_url, "--n", "2", "--batch-size", "2", "--out", str(tmp_path / "r.parquet")]
        first = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        rows = read_table(tmp_path / "r.parquet")
        failed = rows[rows.error.notna()]
        assert len(rows) == 8 and len(failed) == 2
        assert set(failed.problem_id) == {problems.problem_id[1]} and failed.error.str.contains("HTTP 400").all()
        summary = json.loads((tmp_path / "r.parquet.summary.json").read_text())
        assert summary["error_rows"] == 2 and summary["errors_by_kind"] == {"generation": 2}
        second = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
    rows = read_table(tmp_path / "r.parquet")
    assert len(rows) == 8 and rows.error.isna().all() and rows.rollout_id.is_unique
    assert json.loads((tmp_path / "r.parquet.summary.json").read_text())["rows_retried"] == 1
