import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stepdata import SchemaError, make_problems, read_metadata, read_table, write_table
from stepdata.io import atomic_path, redact_secrets, write_text_atomic
from stepdata.schema import SCHEMA_VERSION, SCHEMAS


def rollout_row(**overrides):
    row = {
        "problem_id": "p1",
        "rollout_id": "p1:0",
        "prompt": "Q?\nLet's think step by step.\nStep 1:",
        "completion": " 2 + 2 = 4.\nStep 2: The answer is 4.",
        "steps": [" 2 + 2 = 4.\n", "Step 2: The answer is 4."],
        "pred_answer": "4",
        "correct": True,
        "finish_reason": "stop",
        "model": "tiny",
        "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 256, "seed": 1},
        "prompt_tokens": 12,
        "completion_tokens": 15,
        "error": None,
    }
    row.update(overrides)
    return row


def pair_row(**overrides):
    row = {
        "pair_id": "x",
        "problem_id": "p1",
        "source": "embedded",
        "question": "Q?",
        "answer": "4",
        "prompt_messages": '[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Step 1:"}]',
        "prefix_steps": ["Step 1: a\n"],
        "chosen": "Step 2: 2 + 2 = 4.\n",
        "rejected": "Step 2: 2 + 2 = 5.\n",
        "chosen_full": "Step 1: a\nStep 2: 2 + 2 = 4.\n",
        "rejected_full": "Step 1: a\nStep 2: 2 + 2 = 5.\n",
        "chosen_ends_solution": True,
        "rejected_ends_solution": True,
        "error_step": 1,
        "chosen_verified": None,
        "chosen_source": "policy",
        "kind": "step-dpo",
        "provenance": {"model": "tiny", "sampling": "{}", "localizer": "rules"},
    }
    row.update(overrides)
    return row


def test_round_trip_with_metadata_and_plain_readers(tmp_path):
    path = tmp_path / "rollouts.parquet"
    df = pd.DataFrame([rollout_row(), rollout_row(rollout_id="p1:1", correct=None, steps=[], error="timeout")])
    write_table(df, path, "rollouts", config={"model": "tiny", "api_key": "sk-secret-123"})
    back = read_table(path, kind="rollouts")
    assert back["steps"].tolist() == [df.steps[0], []]
    assert back["correct"].tolist()[1] is None or pd.isna(back["correct"].tolist()[1])
    meta = read_metadata(path)
    assert meta["kind"] == "rollouts" and meta["schema_version"] == SCHEMA_VERSION
    assert meta["config"]["model"] == "tiny"
    assert "sk-secret-123" not in path.read_bytes().decode("latin-1")
    # Plain readers take the file unchanged.
    assert len(pd.read_parquet(path)) == 2
    assert pq.read_schema(path).names == SCHEMAS["rollouts"].names


def test_datasets_reads_our_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "pairs.parquet"
    write_table(pd.DataFrame([pair_row(), pair_row(pair_id="y", kind="scdpo")]), path, "pairs")
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2
    assert ds[0]["prefix_steps"] == ["Step 1: a\n"]
    assert ds[1]["kind"] == "scdpo"
    assert ds[0]["provenance"]["localizer"] == "rules"


def test_missing_column_is_named(tmp_path):
    df = pd.DataFrame([rollout_row()]).drop(columns=["finish_reason"])
    with pytest.raises(SchemaError, match="finish_reason"):
        write_table(df, tmp_path / "r.parquet", "rollouts")
    assert not (tmp_path / "r.parquet").exists()


def test_mistyped_column_names_column_and_row(tmp_path):
    df = pd.DataFrame([rollout_row(), rollout_row(rollout_id="b", prompt_tokens="twelve")])
    with pytest.raises(SchemaError, match=r"'prompt_tokens'.*row 1"):
        write_table(df, tmp_path / "r.parquet", "rollouts")
    df = pd.DataFrame([rollout_row(steps="not a list")])
    with pytest.raises(SchemaError, match="'steps'"):
        write_table(df, tmp_path / "r.parquet", "rollouts")


def test_null_in_required_column_and_bad_kind(tmp_path):
    with pytest.raises(SchemaError, match=r"'problem_id' may not be null; row 0"):
        write_table(pd.DataFrame([rollout_row(problem_id=None)]), tmp_path / "r.parquet", "rollouts")
    with pytest.raises(SchemaError, match=r"'kind' row 1 is 'ppo'"):
        write_table(pd.DataFrame([pair_row(), pair_row(kind="ppo")]), tmp_path / "p.parquet", "pairs")


def test_unknown_column_and_unknown_kind(tmp_path):
    df = pd.DataFrame([rollout_row(extra=1)])
    with pytest.raises(SchemaError, match="unknown column"):
        write_table(df, tmp_path / "r.parquet", "rollouts")
    with pytest.raises(ValueError, match="unknown table kind"):
        write_table(df, tmp_path / "r.parquet", "nonsense")


def test_reading_the_wrong_kind_fails(tmp_path):
    path = tmp_path / "problems.parquet"
    write_table(make_problems(3), path, "problems")
    with pytest.raises(SchemaError, match="expected a pairs table, found a problems table"):
        read_table(path, kind="pairs")


def test_localized_table_extends_rollouts(tmp_path):
    row = rollout_row(correct=False) | {
        "error_step": 0, "status": "error", "method": "rules", "votes": [0, 0, 1], "confidence": 0.67,
        "rationale": "2 + 2 = 5 is false", "localizer_calls": 0, "localizer_tokens": 0,
    }
    path = write_table(pd.DataFrame([row]), tmp_path / "l.parquet", "localized")
    assert read_table(path).votes[0] == [0, 0, 1]


def test_integral_floats_from_pandas_nan_columns(tmp_path):
    # A column of ints with a missing value becomes float64 in pandas; it must still write as int64.
    rows = [rollout_row(), rollout_row(rollout_id="b", prompt_tokens=None)]
    df = pd.DataFrame(rows)
    assert df.prompt_tokens.dtype == "float64"
    back = read_table(write_table(df, tmp_path / "r.parquet", "rollouts"))
    assert back.prompt_tokens.tolist()[0] == 12


def test_redaction_is_recursive():
    cleaned = redact_secrets({"backend": {"api_key": "k", "base_url": "u"}, "tokens": [1], "hf_token": None})
    # a count of tokens is no secret (it changes results: it is recorded and hashed); an unset secret stays None
    assert cleaned == {"backend": {"api_key": "<redacted>", "base_url": "u"}, "tokens": [1], "hf_token": None}
    assert json.dumps(cleaned)


def test_atomic_path_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "out" / "summary.json", '{"old": true}')  # makes the folder
    assert path.read_text(encoding="utf-8") == '{"old": true}'
    with pytest.raises(RuntimeError, match="killed mid-write"), atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text('{"new": tr', encoding="utf-8")  # half written
        raise RuntimeError("killed mid-write")
    assert path.read_text(encoding="utf-8") == '{"old": true}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]  # no temp file behind
    # on success the new content replaces the old one, and again nothing else is left
    with atomic_path(path) as tmp:
        tmp.write_text('{"new": true}', encoding="utf-8")
    assert path.read_text(encoding="utf-8") == '{"new": true}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_write_table_failure_mid_write_keeps_old_table(tmp_path, monkeypatch):
    path = write_table(pd.DataFrame([rollout_row()]), tmp_path / "r.parquet", "rollouts")

    def dies_mid_write(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 trunc")
        raise OSError("disk full")

    monkeypatch.setattr("stepdata.io.pq.write_table", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_table(pd.DataFrame([rollout_row(), rollout_row(rollout_id="p1:1")]), path, "rollouts")
    assert len(read_table(path)) == 1 and [p.name for p in tmp_path.iterdir()] == ["r.parquet"]
