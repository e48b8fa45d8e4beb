"""Foreign and broken inputs through the real CLI (issue 12, items 8-10): each test fails on the code before the fix.

- 8: a bad foreign table is a clear error naming the file, the row (in the input, not in a batch) and the
  column, never a traceback;
- 9: quiet wrong results: a pairs table taken for problems, options out of range, a prompt longer than
  the model's context, CSV with a byte-order mark or undecodable text, numbers with zero-width or
  no-break spaces;
- 10: a pair id is unique in a pairs table and covers everything that makes the pair distinct.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import requires_torch, requires_vllm
from fake_openai_server import FaultyOpenAIServer

from cli import main
from stepdata import read_table, write_table
from stepdata.embedded import make_problems
from stepdata.generation import GenerationRequest
from stepdata.pairs.perturbed import perturbed_pairs
from stepdata.pipeline.lineage import prompt_text
from stepdata.prompts import load_prompt
from stepdata.schema import LOCALIZED, ROLLOUTS
from stepdata.steps import join_steps

PROBLEMS = make_problems(4, seed=11, min_steps=3, max_steps=4)


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args, **kwargs):
    """Run the CLI; a traceback (any exception but a clean exit) fails the test with the output."""
    result = runner.invoke(main, [str(a) for a in args], **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}")
    return result


def foreign(df: pd.DataFrame, path) -> None:
    """Write ``df`` as plain Parquet, as another tool would (no stepdata metadata, no validation)."""
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def rollouts_rows(n: int = 5) -> pd.DataFrame:
    """Wrong rollouts (the gold steps with a wrong last step) of the test problems, every column filled."""
    problems = make_problems(n, seed=5, min_steps=3, max_steps=3)
    rows = []
    for i, p in enumerate(problems.itertuples()):
        steps = [line + "\n" for line in p.solution.split("\n")]
        rows.append({"problem_id": p.problem_id, "rollout_id": f"r{i}", "prompt": "prompt", "completion": join_steps(steps),
                     "steps": steps, "pred_answer": "1", "correct": False, "finish_reason": "stop", "model": "m",
                     "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None})
    return pd.DataFrame(rows, columns=ROLLOUTS.names)


def assert_names(output: str, *parts: str) -> None:
    assert "Traceback" not in output, output
    for part in parts:
        assert part in output, f"{part!r} not in:\n{output}"


# --- 8. bad foreign tables: file, row and column ------------------------------------------------------------


def test_localize_names_a_null_rollout_id_by_file_row_and_column(runner, tmp_path):
    rollouts = rollouts_rows()
    rollouts.loc[3, "rollout_id"] = None
    source = tmp_path / "foreign.parquet"
    foreign(rollouts, source)
    result = invoke(runner, ["localize", source, "--method", "rules", "--out", tmp_path / "l.parquet"])
    assert result.exit_code == 1
    assert_names(result.output, str(source), "'rollout_id'", "row 3", "null")
    assert not (tmp_path / "l.parquet").exists()


def test_a_null_inside_a_steps_list_is_named_by_file_row_and_column(runner, tmp_path):
    rollouts = rollouts_rows()
    rollouts.at[2, "steps"] = ["Step 1: 1 + 1 = 2.\n", None, "The answer is 2."]
    source = tmp_path / "foreign.parquet"
    foreign(rollouts, source)
    for method in ("rules", "exact"):
        result = invoke(runner, ["localize", source, "--method", method, "--problems", "embedded:5",
                                 "--out", tmp_path / f"{method}.parquet"])
        assert result.exit_code == 1, result.output
        assert_names(result.output, str(source), "'steps'", "row 2", "item 1", "null")


def test_schema_errors_name_the_row_of_the_input_not_of_a_batch(runner, tmp_path):
    rollouts = rollouts_rows()
    rollouts["pred_answer"] = [None, None, None, 7, None]  # a number where text belongs, in input row 3
    source = tmp_path / "foreign.parquet"
    foreign(rollouts, source)
    result = invoke(runner, ["localize", source, "--method", "rules", "--batch-size", "2",
                             "--out", tmp_path / "l.parquet"])
    assert result.exit_code == 1
    assert_names(result.output, str(source), "'pred_answer'", "row 3")
    assert "row 1" not in result.output  # its place inside the second batch


def test_export_names_a_null_question_by_file_row_and_column(runner, tmp_path):
    pairs = perturbed_pairs(make_problems(3, seed=3, min_steps=3, max_steps=4), "step-dpo", error_at="middle")
    pairs.loc[1, "question"] = None
    source = tmp_path / "pairs.parquet"
    foreign(pairs, source)
    for fmt, out in (("parquet", "e.parquet"), ("step-dpo", "e.jsonl"), ("jsonl", "f.jsonl")):
        result = invoke(runner, ["export", source, "--format", fmt, "--out", tmp_path / out])
        assert result.exit_code == 1, result.output
        assert_names(result.output, str(source), "'question'", "row 1", "null")
    for command in (["stats", source], ["audit", source, "--out", tmp_path / "r.html"]):
        result = invoke(runner, command)
        assert result.exit_code == 1 and "'question'" in result.output and "row 1" in result.output


def test_show_on_an_empty_or_unreadable_parquet_file_says_what_is_wrong(runner, tmp_path):
    shell = tmp_path / "shell.parquet"  # magic bytes, an empty footer: nothing inside
    shell.write_bytes(b"PAR1" + b"\0" * 12 + b"PAR1")
    result = invoke(runner, ["show", shell])
    assert result.exit_code == 1
    assert_names(result.output, str(shell), "Parquet")

    for label, raw in (("list", b"[]"), ("null", b"null"), ("text", b'"x"')):
        odd = tmp_path / f"meta-{label}.parquet"
        pq.write_table(pa.table({"a": [1]}).replace_schema_metadata({b"stepdata": raw}), odd)
        result = invoke(runner, ["show", odd])
        assert result.exit_code == 0, result.output
        assert_names(result.output, "stepdata metadata", "rows: 1  columns: a")
        refused = invoke(runner, ["localize", odd, "--out", tmp_path / "l.parquet"])
        assert refused.exit_code == 1 and str(odd) in refused.output and "metadata" in refused.output


# --- 9. quiet wrong results ----------------------------------------------------------------------------------


@pytest.fixture
def policy_server(monkeypatch):
    from test_pipeline_pairs import scripted_policy

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(reply_body=scripted_policy(right_indices={0}, never_right=set())) as server:
        yield server, ["--backend", "openai", "--model", "policy", "--base-url", server.base_url]


def test_a_table_of_another_kind_is_not_taken_for_problems(runner, tmp_path, policy_server):
    server, engine = policy_server
    pairs = tmp_path / "pairs.parquet"
    write_table(perturbed_pairs(PROBLEMS, "step-dpo", error_at="middle"), pairs, "pairs")
    for command in ("synthesize", "sample"):
        result = invoke(runner, [command, pairs, *engine, "--out", tmp_path / f"{command}.parquet"])
        assert result.exit_code == 1, result.output
        assert_names(result.output, str(pairs), "pairs table", "problems")
    made = invoke(runner, ["problems", pairs, "--out", tmp_path / "p.parquet"])
    assert made.exit_code == 1 and "pairs table" in made.output
    assert not server.served


@pytest.mark.parametrize("command, option, value", [
    ("synthesize", "--rounds", "0"), ("synthesize", "--top-p", "1.5"), ("synthesize", "--max-step-tokens", "0"),
    ("synthesize", "--temperature-start", "-0.5"), ("synthesize", "--cuts", "0"), ("synthesize", "--schedule", "1.1,-1"),
    ("synthesize", "--max-pairs-per-problem", "0"), ("sample", "--n", "0"), ("sample", "--temperature", "-1"),
    ("sample", "--top-p", "0"), ("sample", "--max-tokens", "0"), ("sample", "--answer-timeout", "0"),
    ("sample", "--batch-size", "0"), ("rectify", "--n", "0"), ("rectify", "--max-pairs-per-rollout", "0"),
    ("localize", "--votes", "0"), ("localize", "--rollouts", "0"), ("localize", "--judge-top-p", "2"),
])
def test_an_option_out_of_range_is_a_usage_error_naming_it(runner, tmp_path, policy_server, command, option, value):
    server, engine = policy_server
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    rollouts = tmp_path / "rollouts.parquet"
    write_table(rollouts_rows(), rollouts, "rollouts")
    localized = tmp_path / "localized.parquet"
    write_table(rollouts_rows().assign(error_step=2, status="error", method="exact", votes=None, confidence=None,
                                       rationale=None, localizer_calls=0, localizer_tokens=0)[LOCALIZED.names],
                localized, "localized")
    source = {"synthesize": problems, "sample": problems, "rectify": localized, "localize": rollouts}[command]
    extra = ["--problems", problems] if command == "rectify" else []
    result = invoke(runner, [command, source, *engine, *extra, option, value, "--out", tmp_path / "out.parquet"])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert not server.served and not (tmp_path / "out.parquet").exists()


def test_a_config_out_of_range_is_refused_naming_the_setting(tmp_path):
    from stepdata.pipeline.localize import LocalizeConfig
    from stepdata.pipeline.rectify import RectifyConfig
    from stepdata.pipeline.sample import SampleConfig
    from stepdata.pipeline.synthesize import SynthesizeConfig
    from stepdata.recipe import load_recipe, run_recipe

    for config, name in ((lambda: SynthesizeConfig(rounds=0), "rounds"), (lambda: SampleConfig(top_p=1.5), "top_p"),
                         (lambda: SampleConfig(temperature=-0.1), "temperature"),
                         (lambda: RectifyConfig(n=0), "n"), (lambda: LocalizeConfig(votes=0), "votes"),
                         (lambda: SynthesizeConfig(schedule=(1.1, -1.0)), "schedule"),
                         (lambda: SampleConfig(split_mode="words"), "split_mode")):
        with pytest.raises(ValueError, match=name):
            config()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"out: {tmp_path / 'run'}\nsteps:\n"
                      "  - {do: make-problems, name: problems, n: 2, out: problems.parquet}\n"
                      "  - {do: synthesize, input: '@problems', model: m, out: s.parquet, config: {rounds: 0}}\n")
    with pytest.raises(ValueError, match=r"steps\[1\].*config\.rounds"):
        run_recipe(load_recipe(str(recipe)))


@requires_torch
@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=requires_vllm)])
def test_a_prompt_longer_than_the_context_is_a_row_error(runner, tmp_path, tiny_model_dir, backend):
    problems = tmp_path / "problems.jsonl"
    long_question = "Ada has 5 marbles and buys 7 more. " * 200 + "How many does she have?"
    problems.write_text(json.dumps({"id": "short", "question": "Ada has 5 marbles. How many?", "answer": "5"}) + "\n"
                        + json.dumps({"id": "long", "question": long_question, "answer": "1405"}) + "\n")
    out = tmp_path / "rollouts.parquet"
    result = invoke(runner, ["sample", problems, "--backend", backend, "--model", tiny_model_dir, "--n", "1",
                             "--max-tokens", "4", "--out", out])
    assert result.exit_code == 0, result.output
    rows = read_table(out).set_index("problem_id")
    assert pd.isna(rows.loc["short", "error"])
    error = rows.loc["long", "error"]
    assert isinstance(error, str) and error.startswith("prompt_too_long: "), error
    assert "> context 1024" in error and int(error.split()[1]) > 1024
    summary = json.loads((tmp_path / "rollouts.parquet.summary.json").read_text())
    assert summary["errors_by_kind"] == {"prompt_too_long": 1}


def test_a_csv_with_a_byte_order_mark_loads(runner, tmp_path):
    source = tmp_path / "bom.csv"
    source.write_text("question,answer\nWhat is 1 + 1?,2\nWhat is 2 + 2?,4\n", encoding="utf-8-sig")
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n', encoding="utf-8-sig")
    for path in (source, jsonl):
        out = tmp_path / f"{path.suffix[1:]}.parquet"
        result = invoke(runner, ["problems", path, "--out", out])
        assert result.exit_code == 0, result.output
        assert read_table(out).question[0] == "What is 1 + 1?"


def test_undecodable_text_names_the_line_and_the_column(runner, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"question,answer\nWhat is 1 + 1?,2\nWhat is \xed\xa0\x80 2 + 2?,4\n")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "What \\ud800 is 2 + 2?", "answer": "4"}\n')
    for path in (csv, jsonl):
        out = tmp_path / f"{path.suffix[1:]}.parquet"
        result = invoke(runner, ["problems", path, "--out", out])
        assert result.exit_code == 1, result.output
        line = "line 3" if path == csv else "line 2"
        assert_names(result.output, str(path), line, "'question'")
        skipped = invoke(runner, ["problems", path, "--skip-bad-rows", "--out", out])
        assert skipped.exit_code == 0, skipped.output
        assert read_table(out).question.tolist() == ["What is 1 + 1?"]


@pytest.mark.parametrize("gold, pred", [("12", "1\u200b2"), ("3000", "3\u00a0000"), ("3000", "3\u202f000"),
                                        ("1250", "1\u2060250"), ("\u200b42", "42"), ("3,000", "3\u00a0000")])
def test_zero_width_and_no_break_spaces_do_not_change_a_number(runner, gold, pred):
    result = invoke(runner, ["check", gold, pred])
    assert json.loads(result.output)["match"] is True, result.output


def test_a_no_break_space_is_not_a_thousands_separator_everywhere(runner):
    assert json.loads(invoke(runner, ["check", "12", "1\u00a02"]).output)["match"] is False


# --- 10. pair ids are unique -----------------------------------------------------------------------------


def localized_table(path) -> None:
    """Three wrong rollouts of one problem, first error at step 1: r0 and r2 are the same text; r1 differs after
    the wrong step, so its pair differs from r0's only in ``rejected_full``."""
    from test_pipeline_pairs import _wrong, gold_steps

    p = PROBLEMS.iloc[0]
    meta = json.loads(p.meta)
    gold = gold_steps(p)
    steps = gold[:1] + [_wrong(g, meta["steps"][j]["value"]) for j, g in enumerate(gold[1:], start=1)]
    other = steps[:2] + [steps[2].rstrip("\n") + " Indeed.\n"] + steps[3:]
    prompt = prompt_text(None, GenerationRequest.chat(p.problem_id, load_prompt("step_by_step").render(question=p.question)))
    rows = []
    for rollout_id, s in (("r0", steps), ("r1", other), ("r2", steps)):
        rows.append({"problem_id": p.problem_id, "rollout_id": rollout_id, "prompt": prompt, "completion": join_steps(s),
                     "steps": s, "pred_answer": None, "correct": False, "finish_reason": "stop", "model": "policy",
                     "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None, "error_step": 1,
                     "status": "error", "method": "exact", "votes": None, "confidence": None, "rationale": None,
                     "localizer_calls": 0, "localizer_tokens": 0})
    write_table(pd.DataFrame(rows, columns=LOCALIZED.names), path, "localized", config={"stage": "localize"})


def test_pair_ids_cover_the_full_sides_and_repeat_nowhere(runner, tmp_path, policy_server):
    _, engine = policy_server
    problems, localized = tmp_path / "problems.parquet", tmp_path / "localized.parquet"
    write_table(PROBLEMS, problems, "problems")
    localized_table(localized)
    out = tmp_path / "stepdpo.parquet"
    result = invoke(runner, ["rectify", localized, *engine, "--problems", problems, "--n", "2", "--out", out])
    assert result.exit_code == 0, result.output
    pairs = read_table(out, kind="pairs")
    assert pairs.pair_id.is_unique, pairs[["pair_id", "rejected_full"]]
    assert len(pairs) == 2 and pairs.rejected.nunique() == 1 and pairs.rejected_full.nunique() == 2
    summary = json.loads((tmp_path / "stepdpo.parquet.summary.json").read_text())
    assert summary["stage_stats"]["duplicate_pairs"] == 1  # r2's pair is r0's
    combined = tmp_path / "all.parquet"
    assert invoke(runner, ["combine", out, "--out", combined]).exit_code == 0


def test_writing_a_pairs_table_with_a_repeated_id_is_an_error_naming_it(runner, tmp_path):
    from stepdata.pairs import combine

    pairs = perturbed_pairs(PROBLEMS, "step-dpo", error_at="middle")
    pairs.loc[2, "pair_id"] = pairs.loc[0, "pair_id"]
    source = tmp_path / "pairs.parquet"
    foreign(pairs, source)
    for fmt, out in (("parquet", "e.parquet"), ("jsonl", "e.jsonl")):
        result = invoke(runner, ["export", source, "--no-dedup", "--format", fmt, "--out", tmp_path / out])
        assert result.exit_code == 1, result.output
        assert_names(result.output, repr(pairs.pair_id[0]), "rows 0 and 2")
        assert not (tmp_path / out).exists()
    assert "repeats_within_a_table" not in combine.combine_pairs.__code__.co_varnames
