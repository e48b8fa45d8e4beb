"""What a new user tripped over (issue 11): each test fails on the code before the fix.

- a finished run started again loads no engine; a changed config is refused before any
  engine loads, naming the settings that changed (old -> new, secrets redacted);
- stages' pairs tables combine into one training set, and `train` reads the export's split;
- an export never writes an empty split;
- `--limit` on localize and rectify; `--*-problem-steps` for problem steps (train keeps --max-steps);
- `show` on a file that is not a stepdata table says what it is.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import requires_torch, requires_train
from fake_openai_server import FaultyOpenAIServer

from cli import main
from stepdata import read_metadata, read_table, write_table
from stepdata.embedded import make_problems
from stepdata.generation.engine_config import EngineConfig
from stepdata.pairs.perturbed import perturbed_pairs
from stepdata.pipeline.pairing import attempt_row, attempts_frame
from stepdata.pipeline.run import ConfigChanged, StageRun

PROBLEMS = make_problems(4, seed=11, min_steps=3, max_steps=4)


@pytest.fixture
def runner():
    return CliRunner()


def no_engine(*args, **kwargs):
    raise AssertionError("an engine was loaded")


def invoke(runner, args):
    result = runner.invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


# --- 1. config checks before the engine ---------------------------------------------------------------


def attempts_of(batch: pd.DataFrame) -> pd.DataFrame:
    return attempts_frame([attempt_row(r.unit_id, r.problem_id, "toy", "pairs") for r in batch.itertuples()])


def toy_run(out, config, **options) -> StageRun:
    return StageRun("toy", out, "attempts", config, key_column="unit_id", batch_size=2, progress=False, **options)


def test_check_names_changed_keys_keeps_secrets_and_knows_a_finished_run(tmp_path):
    units = pd.DataFrame({"unit_id": [f"u{i}" for i in range(5)], "problem_id": ["p"] * 5})
    out = tmp_path / "toy.parquet"
    config = {"model": "m", "api_key": "sk-first", "sampling": {"temperature": 0.8, "n": 4}, "schedule": (1.1, 1.2)}
    fresh = toy_run(out, config).check(units)
    assert not fresh.finished and fresh.batches_total == 3 and fresh.batches_done == 0

    toy_run(out, config).run(units, attempts_of)
    done = toy_run(out, config | {"api_key": "sk-second"}).check(units)  # a secret never enters the hash
    assert done.finished and done.batches_done == 3 and done.summary["rows"] == 5

    changed = config | {"sampling": {"temperature": 0.9, "n": 4}, "limit": 3}
    with pytest.raises(ConfigChanged) as refused:
        toy_run(out, changed | {"api_key": "sk-third"}).check(units)
    message = str(refused.value)
    assert "sampling.temperature: 0.8 -> 0.9" in message and "limit: (not set) -> 3" in message
    assert "another config" in message and "sk-" not in message and "schedule" not in message  # tuple == list

    allowed = toy_run(out, changed, allow_config_change=True).check(units)
    assert not allowed.finished  # the old batches are kept, but the run must be written with the new config
    more = pd.concat([units, pd.DataFrame({"unit_id": ["u5"], "problem_id": ["p"]})], ignore_index=True)
    assert not toy_run(out, config).check(more).finished  # the last batch grew
    over = toy_run(out, changed, overwrite=True).check(units)
    assert over.starting_over and not over.finished
    assert (out.with_name("toy.parquet.parts") / "manifest-00000-of-00001.json").exists()  # check deletes nothing


@requires_torch
def test_finished_sample_loads_no_engine_and_a_changed_option_is_named_first(runner, tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "rollouts.parquet"
    args = ["sample", "embedded:4", "--backend", "hf", "--model", model, "--n", "1", "--max-tokens", "8",
            "--batch-size", "2", "--out", out]
    first = invoke(runner, args)
    assert first.exit_code == 0 and len(read_table(out)) == 4
    shutil.rmtree(model)  # the same path no longer loads: any attempt to load it fails

    again = invoke(runner, args)
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output and str(out) in again.output

    changed = invoke(runner, [*args, "--temperature", "0.9"])
    assert changed.exit_code != 0
    assert "temperature: 0.8 -> 0.9" in changed.output and "--overwrite" in changed.output


def scripted(right_indices: set[int]):
    """A policy server's replies: the gold steps, right for the sample indices given, wrong otherwise."""
    from test_pipeline_pairs import scripted_policy

    return scripted_policy(right_indices=right_indices, never_right=set())


@pytest.fixture
def policy(tmp_path, monkeypatch):
    """A scripted policy server and the problems table it solves (sample 0 right, others wrong)."""
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    with FaultyOpenAIServer(reply_body=scripted({0})) as server:
        yield server, problems, ["--backend", "openai", "--model", "policy", "--base-url", server.base_url]


def sample_and_localize(runner, tmp_path, problems, engine, *localize_options):
    rollouts, localized = tmp_path / "rollouts.parquet", tmp_path / "localized.parquet"
    assert invoke(runner, ["sample", problems, *engine, "--n", "2", "--out", rollouts]).exit_code == 0
    result = invoke(runner, ["localize", rollouts, "--method", "exact", "--problems", problems, *localize_options,
                             "--out", localized])
    assert result.exit_code == 0, result.output
    return rollouts, localized


def test_finished_synthesize_loads_no_engine_and_a_changed_option_is_named_first(runner, tmp_path, monkeypatch,
                                                                                 policy):
    server, problems, engine = policy
    out = tmp_path / "scdpo.parquet"
    args = ["synthesize", problems, *engine, "--rounds", "2", "--batch-size", "2", "--out", out]
    assert invoke(runner, args).exit_code == 0
    served = len(server.served)
    monkeypatch.setattr(EngineConfig, "build", no_engine)
    again = invoke(runner, args)
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output and "synthesize: " in again.output and str(out) in again.output
    changed = invoke(runner, [*args, "--rounds", "3"])
    assert changed.exit_code != 0 and "rounds: 2 -> 3" in changed.output
    assert len(server.served) == served


def test_finished_rectify_loads_no_engine_and_a_changed_option_is_named_first(runner, tmp_path, monkeypatch, policy):
    server, problems, engine = policy
    _, localized = sample_and_localize(runner, tmp_path, problems, engine)
    out = tmp_path / "stepdpo.parquet"
    args = ["rectify", localized, *engine, "--problems", problems, "--n", "2", "--out", out]
    assert invoke(runner, args).exit_code == 0
    served = len(server.served)
    monkeypatch.setattr(EngineConfig, "build", no_engine)
    again = invoke(runner, args)
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output and "rectify: " in again.output and str(out) in again.output
    changed = invoke(runner, [*args, "--n", "3"])
    assert changed.exit_code != 0 and "n: 2 -> 3" in changed.output
    assert len(server.served) == served


def test_limit_on_localize_and_rectify_takes_the_first_rows(runner, tmp_path, policy):
    _, problems, engine = policy
    rollouts, localized = sample_and_localize(runner, tmp_path, problems, engine, "--limit", "4")
    table = read_table(rollouts)
    assert len(table) == 8
    wrong_in_first_four = table.head(4).loc[lambda df: df.correct.eq(False)]
    assert read_table(localized).rollout_id.tolist() == wrong_in_first_four.rollout_id.tolist()
    out = tmp_path / "stepdpo.parquet"
    args = ["rectify", localized, *engine, "--problems", problems, "--n", "2", "--out", out]
    assert invoke(runner, [*args, "--limit", "1"]).exit_code == 0
    assert read_table(tmp_path / "stepdpo.attempts.parquet").unit_id.tolist() == wrong_in_first_four.rollout_id[:1].tolist()
    relimited = invoke(runner, [*args, "--limit", "2"])  # another N is another run, not a silent resume
    assert relimited.exit_code != 0 and "limit: 1 -> 2" in relimited.output


# --- 2. from the stages' outputs to one training set --------------------------------------------------


def stage_table(path, kind: str, stage: str, n: int = 4):
    pairs = perturbed_pairs(make_problems(n, seed=3, min_steps=3, max_steps=4), kind, error_at="middle")
    write_table(pairs, path, "pairs", config={"stage": stage, "model": "policy"})
    return pairs


def test_combine_joins_stage_tables_that_merge_refuses(runner, tmp_path):
    rect, synth = tmp_path / "stepdpo.parquet", tmp_path / "scdpo.parquet"
    a, b = stage_table(rect, "step-dpo", "rectify"), stage_table(synth, "scdpo", "synthesize")
    merged = invoke(runner, ["merge", rect, synth, "--out", tmp_path / "m.parquet"])
    assert merged.exit_code != 0 and "stepdata combine" in merged.output

    out = tmp_path / "all.parquet"
    combined = invoke(runner, ["combine", rect, synth, "--out", out])
    assert combined.exit_code == 0, combined.output
    table = read_table(out, kind="pairs")
    assert table.pair_id.tolist() == [*a.pair_id, *b.pair_id]
    sources = read_metadata(out)["config"]["sources"]
    assert [(s["path"], s["rows"], s["stage"]) for s in sources] == [(str(rect), len(a), "rectify"),
                                                                       (str(synth), len(b), "synthesize")]

    twice = invoke(runner, ["combine", rect, synth, rect, "--out", tmp_path / "x.parquet"])
    assert twice.exit_code != 0 and repr(a.pair_id[0]) in twice.output and f"{rect} row 0" in twice.output
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    wrong = invoke(runner, ["combine", rect, problems, "--out", tmp_path / "y.parquet"])
    assert wrong.exit_code != 0 and str(problems) in wrong.output and "found a problems table" in wrong.output
    step_dpo = tmp_path / "sd.jsonl"
    assert invoke(runner, ["export", rect, "--format", "step-dpo", "--out", step_dpo]).exit_code == 0
    layout = invoke(runner, ["combine", rect, step_dpo, "--out", tmp_path / "z.parquet"])
    assert layout.exit_code != 0 and "step-dpo export" in layout.output and "--format jsonl" in layout.output
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "z.parquet").exists()


def test_the_export_split_is_what_train_reads(runner, tmp_path):
    from stepdata.pairs.export import read_pairs

    src = tmp_path / "pairs.parquet"
    pairs = stage_table(src, "step-dpo", "rectify", n=8)
    for fmt, suffix in (("parquet", ".parquet"), ("jsonl", ".jsonl")):
        out = tmp_path / f"export{suffix}"
        assert invoke(runner, ["export", src, "--format", fmt, "--test-fraction", "0.3", "--out", out]).exit_code == 0
        train = read_pairs(tmp_path / f"export.train{suffix}")
        test = read_pairs(tmp_path / f"export.test{suffix}")
        assert sorted([*train.pair_id, *test.pair_id]) == sorted(pairs.pair_id)
        assert set(train.problem_id).isdisjoint(test.problem_id)
        original = pairs.set_index("pair_id").loc[train.pair_id].reset_index()
        pd.testing.assert_frame_equal(train[["pair_id", "chosen", "rejected", "error_step"]],
                                      original[["pair_id", "chosen", "rejected", "error_step"]])
        assert list(train.prefix_steps[0]) == list(original.prefix_steps[0])
    missing = invoke(runner, ["train", "stepdpo", "--model", tmp_path, "--data", tmp_path / "export.jsonl",
                              "--out", tmp_path / "m"])
    assert missing.exit_code != 0 and "export.train.jsonl" in missing.output


@requires_train
def test_train_runs_on_the_jsonl_train_split(runner, tmp_path, tiny_model_dir):
    src = tmp_path / "pairs.parquet"
    stage_table(src, "step-dpo", "rectify", n=8)
    out = tmp_path / "export.jsonl"
    assert invoke(runner, ["export", src, "--format", "jsonl", "--test-fraction", "0.3", "--out", out]).exit_code == 0
    rows = len((tmp_path / "export.train.jsonl").read_text().splitlines())
    trained = invoke(runner, ["train", "stepdpo", "--model", tiny_model_dir, "--data", tmp_path / "export.train.jsonl",
                              "--out", tmp_path / "model", "--max-steps", "1", "--batch-size", "2"])
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "model" / "train_report.json").read_text())["data"]["rows_in"] == rows
    trl = tmp_path / "trl.parquet"
    assert invoke(runner, ["export", src, "--format", "trl", "--model", tiny_model_dir, "--out", trl]).exit_code == 0
    refused = invoke(runner, ["train", "stepdpo", "--model", tiny_model_dir, "--data", trl, "--out", tmp_path / "m2"])
    assert refused.exit_code != 0 and "trl export" in refused.output


# --- 3. no empty split --------------------------------------------------------------------------------


def test_an_empty_split_is_not_written_and_the_summary_says_so(runner, tmp_path):
    import datasets

    from stepdata.pairs.split import split_by_problem

    src = tmp_path / "pairs.parquet"
    pairs = stage_table(src, "step-dpo", "rectify", n=3)
    seed = next(s for s in range(200) if split_by_problem(pairs, 0.1, s)[1].empty)
    out = tmp_path / "export.jsonl"
    (tmp_path / "export.test.jsonl").write_text("stale\n")  # from an earlier export to the same name
    result = invoke(runner, ["export", src, "--format", "jsonl", "--test-fraction", "0.1", "--seed", seed, "--out", out])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "export.test.jsonl").exists()
    assert "wrote no test split" in result.output and "--test-fraction" in result.output
    summary = json.loads((tmp_path / "export.summary.json").read_text())
    assert summary["files"]["test"] is None and "test" in summary["not_written"]
    loaded = datasets.load_dataset("json", data_files={"train": str(tmp_path / "export.train.jsonl")},
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded["train"]) == len(pairs)


# --- 5. one name, one meaning -------------------------------------------------------------------------


def test_problem_steps_options_are_named_apart_from_train_max_steps(runner, tmp_path):
    out = tmp_path / "p.parquet"
    made = invoke(runner, ["make-problems", "--n", "6", "--min-problem-steps", "3", "--max-problem-steps", "3",
                           "--out", out])
    assert made.exit_code == 0, made.output
    assert {len(json.loads(m)["steps"]) for m in read_table(out).meta} == {3}
    for command in ("make-problems", "eval"):
        old = invoke(runner, [command, "--max-steps", "3", "--out", tmp_path / "x"])
        assert old.exit_code == 2 and "No such option '--max-steps'" in old.output
        assert "--max-problem-steps" in invoke(runner, [command, "--help"]).output
    assert "--max-steps" in invoke(runner, ["train", "--help"]).output


# --- 6. show on what is not a stepdata table ----------------------------------------------------------


def test_show_says_what_a_file_is(runner, tmp_path):
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"question": "1 + 1?", "answer": "2"}\n')
    shown = invoke(runner, ["show", jsonl])
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert "x.jsonl is not a Parquet file (it looks like JSON lines)" in shown.output and "stepdata problems" in shown.output

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert "empty.parquet is empty (0 bytes)" in invoke(runner, ["show", empty]).output

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "b": [[1], [2, 3], []]}), foreign)
    result = invoke(runner, ["show", foreign, "--rows", "1"])
    assert result.exit_code == 0 and "not a stepdata table" in result.output and "rows: 3  columns: a, b" in result.output
    assert "schema version" not in result.output
