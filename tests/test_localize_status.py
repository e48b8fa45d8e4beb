"""The localized table's status column and the localize summary: -1 is "no error found", not a located
error; a solution that stops early is unfinished (not an error one past its end); old tables still read."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdata import SchemaError, make_problems, read_table, split_steps, write_table
from stepdata.localize.exact import exact_first_error
from stepdata.pipeline.localize import LocalizeStage, localize_stats

PROBLEMS = make_problems(3, seed=3)
GOLD = split_steps(PROBLEMS.solution[0])  # 6 gold steps, then "The answer is 32."
BASE = {"prompt": "p", "completion": "c", "pred_answer": "1", "correct": False, "finish_reason": "stop",
        "model": "m", "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None}


def rollout(rollout_id: str, steps: list[str], problem: int = 0, **extra) -> dict:
    return BASE | {"problem_id": PROBLEMS.problem_id[problem], "rollout_id": rollout_id, "steps": steps} | extra


def test_exact_on_a_solution_that_stops_early_is_unfinished_not_one_past_the_end():
    found = exact_first_error(GOLD[:3], PROBLEMS.meta[0])
    assert found[0] is None, "not a step index past the end of the solution"
    assert found.error_step is None and found.status == "unfinished" and "stops after 3 of 6" in found.rationale
    assert exact_first_error(GOLD, PROBLEMS.meta[0]).status == "no_error"
    assert exact_first_error(GOLD, PROBLEMS.meta[0], finished=False).status == "unfinished"
    wrong = GOLD[:2] + [GOLD[2].replace("48", "49")] + GOLD[3:]
    assert exact_first_error(wrong, PROBLEMS.meta[0])[:1] == (2,) and exact_first_error(wrong, PROBLEMS.meta[0]).status == "error"
    assert exact_first_error(GOLD, None).status == "unknown"


def test_every_method_fills_status_and_the_summary_counts_each():
    rows = pd.DataFrame([
        rollout("early", GOLD[:3]),  # stops early: unfinished
        rollout("cut", GOLD, finish_reason="length"),  # all right, cut at max_tokens: unfinished
        rollout("wrong", GOLD[:2] + [GOLD[2].replace("48", "49")] + GOLD[3:]),  # error at 2
        rollout("clean", GOLD),  # no error found
        rollout("empty", []),  # nothing to check: unknown
    ])
    stage = LocalizeStage("exact", problems=PROBLEMS)
    out = stage(rows).set_index("rollout_id")
    assert out.status.to_dict() == {"early": "unfinished", "cut": "unfinished", "wrong": "error", "clean": "no_error",
                                    "empty": "unknown"}
    assert pd.isna(out.error_step["early"]) and out.error_step["wrong"] == 2 and out.error_step["clean"] == -1
    stats = stage.stats(out.reset_index())
    assert (stats["localized"], stats["no_error"], stats["unknown"], stats["unfinished"]) == (1, 1, 1, 2)
    assert stats["error_step_histogram"] == {2: 1}
    assert stats["status_by_method"] == {"exact": {"unfinished": 2, "error": 1, "no_error": 1, "unknown": 1}}


def test_rules_that_find_no_false_claim_in_a_wrong_rollout_say_unknown_and_a_cut_rollout_is_unfinished():
    rows = pd.DataFrame([
        rollout("false", ["2 * 3 = 7\n", "done"]),
        rollout("nothing", ["We think.\n", "So 5."]),
        rollout("cut", ["We think.\n", "So 5"], finish_reason="length"),
    ])
    stage = LocalizeStage("rules")
    out = stage(rows).set_index("rollout_id")
    assert out.error_step["false"] == 0 and out.status["false"] == "error"
    # the rollout's answer is wrong: rules that see no false arithmetic cannot call it error-free
    assert pd.isna(out.error_step["nothing"]) and out.status["nothing"] == "unknown"
    assert pd.isna(out.error_step["cut"]) and out.status["cut"] == "unfinished"
    stats = stage.stats(out.reset_index())
    assert stats["localized"] == 1
    assert (stats["no_error"], stats["unfinished"], stats["unknown"]) == (0, 1, 1)


def test_a_problem_listed_twice_is_used_once():
    twice = pd.concat([PROBLEMS, PROBLEMS.iloc[[0]]], ignore_index=True)
    stage = LocalizeStage("exact", problems=twice)
    out = stage(pd.DataFrame([rollout("a", GOLD[:2] + [GOLD[2].replace("48", "49")]), rollout("b", GOLD, problem=0)]))
    assert list(out.error_step) == [2, -1] and len(out) == 2


def test_status_is_checked_at_write_time(tmp_path):
    out = LocalizeStage("rules")(pd.DataFrame([rollout("a", ["2 + 2 = 5\n"])]))
    write_table(out, tmp_path / "ok.parquet", "localized")
    out.loc[0, "status"] = "found"
    with pytest.raises(SchemaError, match="status.*expected one of"):
        write_table(out, tmp_path / "bad.parquet", "localized")


def test_an_older_localized_table_without_status_still_reads(tmp_path):
    out = LocalizeStage("rules")(pd.DataFrame([
        rollout("a", ["2 + 2 = 5\n"]), rollout("b", ["We think.\n"]), rollout("c", [])]))
    table = pa.Table.from_pandas(out.drop(columns=["status"]), preserve_index=False)
    table = table.replace_schema_metadata({b"stepdata": b'{"kind": "localized", "schema_version": 2}'})
    pq.write_table(table, tmp_path / "old.parquet")
    old = read_table(tmp_path / "old.parquet", kind="localized")
    assert list(old.status) == ["error", "unknown", "unknown"]
    assert list(old.columns) == list(out.columns)
    assert localize_stats(old)["localized"] == 1


def test_the_summary_does_not_count_no_error_as_localized():
    rows = pd.DataFrame({"error_step": [2, -1, -1, None], "method": ["judge"] * 4, "localizer_calls": [1] * 4,
                         "localizer_tokens": [10] * 4, "error": [None] * 4, "votes": [[2], [-1], [-1, -1], []],
                         "rationale": ["{}"] * 4})
    stats = localize_stats(rows)  # a frame without status (an older table): derived from error_step
    assert stats["localized"] == 1, "-1 is no error found, not a located error"
    assert (stats["no_error"], stats["unknown"]) == (2, 1)
    assert stats["error_step_histogram"] == {2: 1}
