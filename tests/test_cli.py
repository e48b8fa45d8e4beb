import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from stepdata import read_metadata, read_table


@pytest.fixture
def runner():
    return CliRunner()


def test_make_problems_and_show(runner, tmp_path):
    out = tmp_path / "p.parquet"
    result = runner.invoke(main, ["make-problems", "--n", "12", "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_table(out, kind="problems")) == 12
    assert read_metadata(out)["config"]["seed"] == 2
    shown = runner.invoke(main, ["show", str(out), "--rows", "2"])
    assert shown.exit_code == 0 and "kind: problems" in shown.output and "rows: 12" in shown.output


def test_problems_from_named_set_and_bad_rows_file(runner, tmp_path, shared_data):
    out = tmp_path / "svamp.parquet"
    result = runner.invoke(main, ["problems", "svamp", "--data-dir", str(shared_data), "--limit", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_table(out)) == 5

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a?", "answer": 1}\n{"question": 5, "answer": 2}\n')
    failed = runner.invoke(main, ["problems", str(bad), "-o", str(tmp_path / "x.parquet")])
    assert failed.exit_code != 0 and "bad.jsonl, line 2, field 'question'" in failed.output
    ok = runner.invoke(main, ["problems", str(bad), "--skip-bad-rows", "-o", str(tmp_path / "x.parquet")])
    assert ok.exit_code == 0
    report = (tmp_path / "x.bad_rows.jsonl").read_text().splitlines()
    assert [json.loads(r)["line"] for r in report] == [2]


def test_check_extract_split(runner):
    checked = runner.invoke(main, ["check", "1/2", "0.5"])
    assert json.loads(checked.output) == {"match": True, "status": "match", "path": "fast", "detail": ""}
    assert runner.invoke(main, ["extract", "so \\boxed{42}."]).output.strip() == "42"
    assert runner.invoke(main, ["extract", "-"], input="#### 7\n").output.strip() == "7"
    assert runner.invoke(main, ["extract", "nothing", "--no-last-number"]).exit_code != 0
    steps = json.loads(runner.invoke(main, ["split", "Step 1: a\nStep 2: b"]).output)
    assert steps == ["Step 1: a\n", "Step 2: b"]


def test_prompts_and_datasets(runner):
    listed = runner.invoke(main, ["prompts"])
    assert "step_by_step" in listed.output and "boxed" in listed.output
    shown = runner.invoke(main, ["prompts", "step_by_step"])
    assert "Step 1:" in shown.output
    assert runner.invoke(main, ["prompts", "nope"]).exit_code != 0
    assert "gsm8k:train" in runner.invoke(main, ["datasets"]).output


def test_bad_column_mapping_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["problems", "embedded:2", "--column", "question", "-o", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "OURS=THEIRS" in result.output


def test_console_script_runs():
    exe = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, check=True)
    assert "make-problems" in exe.stdout
