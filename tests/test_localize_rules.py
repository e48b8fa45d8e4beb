"""The rules localizer: exact on embedded problems, precise on ProcessBench's correct samples."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stepdata import make_problems, read_table, split_steps, write_table
from stepdata.bench.processbench import prediction, run_processbench
from stepdata.localize import Solution, claims_in, localize_by_rules, make_localizer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "step, expected",
    [
        ("Ada has 12 + 5 = 17 marbles.", [True]),
        ("Ada has 12 + 5 = 18 marbles.", [False]),
        ("x = 3 + 4 = 8", [False]),
        ("He pays $3 * 4 = $13", [False]),
        ("She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.", [True, True]),  # the note and the text
        ("<<48/2=25>>", [False]),
        ("10 / 3 = 3.33 each", [True]),
        ("2 * 3 + 4 = 6 + 4 = 11", [False]),
        ("20% * 50 = 10", [True]),
        ("3 \\times 4 = 13", [False]),
        ("\\frac{3}{4} = 0.75", [True]),
        # not read: the left side is the tail of a phrase, or a variable/LaTeX continues the equation
        ("half of 50 = 24", []),
        ("x + 3 = 5", []),
        ("a_3 = 9 + 12", []),
        ("4^2 = 2^2 + 3^2 - 2 * 2 * 3 \\cos C", []),
        ("1344 / 175 = 7 remainder 119", []),
        ("The year 2015", []),
    ],
)
def test_claims(step, expected):
    assert [c.holds for c in claims_in(step)] == expected


@pytest.mark.parametrize(
    "step, written, rounded",
    [
        ("Janet has 16 / 3 = 5 eggs", [False], [True]),  # an integer written for 5.33...: false unless rounding
        ("10 / 3 = 3 liters", [False], [True]),
        ("16 / 3 = 5.33", [True], [True]),  # true to the two decimals it writes
        ("16 / 3 = 5.3", [True], [True]),
        ("16 / 3 = 5.34", [False], [False]),
        ("10 / 4 = 2.5", [True], [True]),  # exact
        ("16 / 3 = 6", [False], [False]),  # not even a rounding
        ("7 * 3 = 21", [True], [True]),
        ("<<16/3=5>>", [False], [True]),
    ],
)
def test_claims_hold_only_to_the_precision_they_write(step, written, rounded):
    assert [c.holds for c in claims_in(step)] == written
    assert [c.holds for c in claims_in(step, tolerance="written")] == written
    assert [c.holds for c in claims_in(step, tolerance="rounded")] == rounded


def test_a_rounded_chosen_step_is_not_verified():
    from stepdata.localize.exact import verify_step

    assert verify_step("Each bottle holds 10 / 3 = 3 liters.", 0) is False
    assert localize_by_rules(["We share.\n", "Each gets 16 / 3 = 5 eggs.\n"]).error_step == 1
    assert localize_by_rules(["We share.\n", "Each gets 16 / 3 = 5 eggs.\n"], tolerance="rounded").error_step == -1
    with pytest.raises(ValueError, match="tolerance"):
        claims_in("1 + 1 = 2", tolerance="loose")


def test_no_false_claim_is_a_prediction_of_minus_one_on_processbench():
    solutions = [Solution("a", "a", "q", ["2 + 2 = 4.\n", "So 4."]), Solution("b", "b", "q", ["2 + 2 = 5.\n"])]
    assert [prediction(found) for found in make_localizer("rules").locate(solutions)] == [-1, 0]


def corrupt(step: str, value: int) -> str:
    """Change the stated result of a step's claim (the number right after '= ')."""
    return step.replace(f"= {value} ", f"= {value + random.Random(value).choice([1, 2, 10])} ", 1)


def test_exact_on_embedded_problems():
    rng = random.Random(0)
    for row in make_problems(300, seed=21).itertuples():
        steps = split_steps(row.solution)
        values = [s["value"] for s in json.loads(row.meta)["steps"]]
        assert localize_by_rules(steps).error_step == -1  # no false claim: "no error found"
        k = rng.randrange(len(steps))
        wrong = steps[:k] + [corrupt(steps[k], values[k])] + steps[k + 1 :]
        assert wrong[k] != steps[k]
        verdict = localize_by_rules(wrong)
        assert verdict.error_step == k, (row.problem_id, wrong[k], verdict)


def test_bad_steps_are_outcomes_not_crashes():
    assert localize_by_rules([]).error_step is None  # nothing to check
    assert localize_by_rules(["The answer is 4."]).error_step == -1  # nothing false
    start = time.monotonic()
    huge = "1" * 100_000 + " + 1 = 2 " + "(" * 50_000 + "= 3"
    assert localize_by_rules([huge, "2 * 3 = 7"]).error_step == 1
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("subset", ["gsm8k", "math"])
def test_processbench_correct_samples_are_almost_never_flagged(shared_data, subset):
    result = run_processbench(subset, make_localizer("rules"), data_dir=shared_data)
    assert result.samples == {"gsm8k": 400, "math": 1000}[subset]
    assert result.acc_correct >= 0.97, result
    assert result.acc_erroneous > 0.0  # it does find some real arithmetic errors


def test_localize_command_counts_what_it_leaves_out(tmp_path):
    base = {"prompt": "p", "model": "m", "sampling": None, "prompt_tokens": 1, "completion_tokens": 1,
            "finish_reason": "stop", "pred_answer": "1"}
    rows = [
        base | {"problem_id": "a", "rollout_id": "a:0", "completion": "x", "steps": ["2 + 2 = 5.\n", "So 5."],
                "correct": False, "error": None},
        base | {"problem_id": "a", "rollout_id": "a:1", "completion": "", "steps": [], "correct": False, "error": None},
        base | {"problem_id": "a", "rollout_id": "a:2", "completion": "x", "steps": ["2 + 2 = 4."], "correct": True,
                "error": None},
        base | {"problem_id": "b", "rollout_id": "b:0", "completion": None, "steps": None, "correct": None,
                "error": "generation: HTTP 500"},
        base | {"problem_id": "b", "rollout_id": "b:1", "completion": "x", "steps": ["We think.", "2 * 3 = 7"],
                "correct": False, "error": None},
    ]
    write_table(pd.DataFrame(rows), tmp_path / "r.parquet", "rollouts")
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "localize", str(tmp_path / "r.parquet"),
                           "--out", str(tmp_path / "l.parquet")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    localized = read_table(tmp_path / "l.parquet", kind="localized").set_index("rollout_id")
    assert list(localized.index) == ["a:0", "a:1", "b:1"]
    assert localized.error_step["a:0"] == 0 and localized.error_step["b:1"] == 1
    assert pd.isna(localized.error_step["a:1"]) and localized.rationale["a:1"] == "no steps to check"
    summary = json.loads((tmp_path / "l.parquet.summary.json").read_text())
    assert summary["stage_stats"]["left_out"] == {"correct": 1, "unjudged_or_failed": 1}
    assert summary["stage_stats"]["error_step_histogram"] == {"0": 1, "1": 1}
