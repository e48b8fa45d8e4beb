"""The threshold sweep of score-based localizers: arithmetic on hand-built step scores, and through the bench
command with a localizer that scores steps (from the arithmetic rules), checked against scoring afresh at each
threshold."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import main
from stepdata.bench.processbench import run_processbench
from stepdata.bench.scoring import (
    DEFAULT_SWEEP,
    average_f1,
    score,
    sweep,
    sweep_table,
)
from stepdata.localize import load_plugin, make_localizer, unregister_localizer
from stepdata.localize.base import first_below


def test_a_prediction_at_a_threshold_is_the_first_step_below_it():
    assert first_below([0.9, 0.4, 0.2], 0.5) == 1
    assert first_below([0.9, 0.4, 0.2], 0.3) == 2
    assert first_below([0.9, 0.4, 0.2], 0.1) == -1
    assert first_below([0.9, 0.5], 0.5) == -1  # "below": a score equal to the threshold is good
    assert first_below([], 0.5) == -1


def test_scores_and_the_average_f1():
    # erroneous: 2 of 3 exact (a None is wrong); correct: 1 of 2 say -1
    found = score([(1, 1), (0, 0), (2, None), (-1, -1), (-1, None)])
    assert (found.erroneous, found.correct) == (3, 2)
    assert (found.acc_erroneous, found.acc_correct) == (pytest.approx(2 / 3), 0.5)
    assert found.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert score([(1, 0), (-1, 2)]).f1 == 0.0
    assert average_f1([0.5, 1.0, 0.0, 0.25]) == pytest.approx(0.4375)  # each subset once, whatever its size


RECORDS = [
    # subset a: an error at step 1 (scores dip there), and a correct sample whose lowest score is 0.45
    {"id": "a1", "subset": "a", "label": 1, "predicted": 1, "step_scores": [0.9, 0.3, 0.8]},
    {"id": "a2", "subset": "a", "label": -1, "predicted": -1, "step_scores": [0.95, 0.45]},
    # subset b: an error at step 0 scored 0.6; a sample another localizer answered (no scores) keeps its answer
    {"id": "b1", "subset": "b", "label": 0, "predicted": -1, "step_scores": [0.6, 0.2]},
    {"id": "b2", "subset": "b", "label": -1, "predicted": -1},
    {"id": "b3", "subset": "b", "label": 2, "predicted": None},  # no prediction: wrong at every threshold
]


def test_the_sweep_recomputes_predictions_from_step_scores():
    rows = {row.threshold: row for row in sweep(RECORDS, [0.25, 0.4, 0.5, 0.7])}
    # 0.25: a1 -> -1 (wrong), a2 -> -1 (right); b1 -> 1 (wrong), b2 right, b3 wrong
    assert (rows[0.25].subsets["a"].acc_erroneous, rows[0.25].subsets["a"].acc_correct) == (0.0, 1.0)
    assert rows[0.25].subsets["a"].f1 == 0.0 and rows[0.25].subsets["b"].f1 == 0.0
    # 0.4: a1 -> 1 (right), a2 right: a's F1 is 1; b1 still -> 1
    assert rows[0.4].subsets["a"].f1 == 1.0 and rows[0.4].subsets["b"].acc_erroneous == 0.0
    # 0.5: a2 -> 1 (wrong on correct): a is 1 / 0
    assert (rows[0.5].subsets["a"].acc_erroneous, rows[0.5].subsets["a"].acc_correct) == (1.0, 0.0)
    # 0.7: b1 -> 0 (right): b is 1/2 erroneous right, 1/1 correct right
    b = rows[0.7].subsets["b"]
    assert (b.erroneous, b.correct, b.acc_erroneous, b.acc_correct) == (2, 1, 0.5, 1.0)
    assert b.f1 == pytest.approx(2 / 3)
    assert rows[0.7].average_f1 == pytest.approx((rows[0.7].subsets["a"].f1 + b.f1) / 2)
    assert rows[0.4].average_f1 == pytest.approx(0.5)


def test_the_sweep_table_marks_the_operating_point_and_the_best():
    rows = sweep(RECORDS, [0.25, 0.4, 0.7])
    table = sweep_table(rows, operating=0.7).splitlines()
    assert table[0] == "| threshold |    a F1 |    b F1 | avg. F1 |"
    assert table[3].startswith("|      0.40 |   100.0 |     0.0 |    50.0 |") and "best" in table[3]
    assert "operating point" in table[4] and "best" not in table[4]


@pytest.mark.parametrize("bad, message", [([0.5, 1.5], r"step_scores\[1\] must be a number in \[0, 1\], found 1.5"),
                                          ([float("nan")], r"step_scores\[0\]"), ("0.5", "step_scores must be a list")])
def test_bad_step_scores_are_refused_naming_the_sample(bad, message):
    with pytest.raises(ValueError, match=r"sample 'x' of a: " + message):
        sweep([{"id": "x", "subset": "a", "label": 0, "predicted": 0, "step_scores": bad}], [0.5])


PLUGIN = '''
from stepdata.localize import Localization, register_localizer
from stepdata.localize.rules import claims_in


class ScoredRules:
    """P(good) per step from the arithmetic rules: 0.1 with a false claim, 0.9 with true ones only, 0.5 with none."""

    name = "scored-rules"

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def locate(self, solutions):
        found = []
        for solution in solutions:
            scores = []
            for step in solution.steps:
                claims = claims_in(step)
                scores.append(0.1 if any(not c.holds for c in claims) else 0.9 if claims else 0.5)
            first = next((i for i, value in enumerate(scores) if value < self.threshold), -1)
            found.append(Localization(first, "error" if first >= 0 else "no_error", method=self.name,
                                      evidence={"step_scores": scores, "threshold": self.threshold}))
        return found


register_localizer("scored-rules")(ScoredRules)
'''


@pytest.fixture(scope="module")
def scored_rules(tmp_path_factory):
    """A score-based localizer as a user's plugin file (registered for this module's tests)."""
    path = tmp_path_factory.mktemp("plugin") / "scored_rules.py"
    path.write_text(PLUGIN)
    load_plugin(str(path))
    yield path
    unregister_localizer("scored-rules")


def test_the_bench_sweeps_a_score_based_localizer_without_scoring_again(scored_rules, shared_data, tmp_path):
    hand = tmp_path / "hand.json"  # a second subset: steps with false, true and no claims
    hand.write_text(json.dumps([
        {"id": "h1", "problem": "Add.", "steps": ["We add them.", "3 + 4 = 8."], "label": 1},
        {"id": "h2", "problem": "Add.", "steps": ["3 + 4 = 7.", "So 7."], "label": -1},
        {"id": "h3", "problem": "Add.", "steps": ["We guess.", "3 + 4 = 7."], "label": 0},
        {"id": "h4", "problem": "Add.", "steps": ["3 + 4 = 7.", "5 + 5 = 10."], "label": -1}]))
    done = CliRunner().invoke(main, ["bench", "processbench", "--plugin", str(scored_rules), "--localizer",
                                     "scored-rules", "--data-dir", str(shared_data), "--subset", "gsm8k", "--data",
                                     str(hand), "--sweep", "0.3,0.95,0.6", "--json", str(tmp_path / "b.json")])
    assert done.exit_code == 0, done.output
    assert "a threshold chosen on these samples flatters the result" in done.output
    assert "held-out data" in done.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert all(len(p["step_scores"]) > 0 for p in report["predictions"])  # every sample's scores are written
    rows = report["sweep"]["rows"]
    # the operating point (the threshold the localizer's evidence names) joins the grid and is marked
    assert [row["threshold"] for row in rows] == [0.3, 0.5, 0.6, 0.95] and report["sweep"]["operating_threshold"] == 0.5
    assert any(line.startswith("|      0.50 |") and "<- operating point" in line for line in done.output.splitlines())
    for row in rows:  # the sweep equals the localizer run afresh at that threshold
        localizer = make_localizer("scored-rules", threshold=row["threshold"])
        fresh = [run_processbench("gsm8k", localizer, data_dir=shared_data), run_processbench("hand", localizer, path=hand)]
        assert [row["subsets"][r.subset]["f1"] for r in fresh] == [r.f1 for r in fresh]
        assert row["average_f1"] == pytest.approx(sum(r.f1 for r in fresh) / 2)
    assert len({row["average_f1"] for row in rows}) >= 3, "the thresholds give different results"
    at_half = run_processbench("gsm8k", make_localizer("scored-rules"), data_dir=shared_data)
    assert report["subsets"][0]["f1"] == at_half.f1  # the main table is the localizer's own operating point

    grid = CliRunner().invoke(main, ["bench", "processbench", "--plugin", str(scored_rules), "--localizer",
                                     "scored-rules", "--data-dir", str(shared_data), "--subset", "gsm8k", "--sweep",
                                     "--json", str(tmp_path / "g.json")])
    assert grid.exit_code == 0, grid.output
    assert [r["threshold"] for r in json.loads((tmp_path / "g.json").read_text())["sweep"]["rows"]] == \
        list(DEFAULT_SWEEP)


def test_a_sweep_of_a_localizer_without_step_scores_says_so(shared_data, tmp_path):
    done = CliRunner().invoke(main, ["bench", "processbench", "--data-dir", str(shared_data), "--subset", "gsm8k",
                                     "--limit", "10", "--sweep", "0.5", "--json", str(tmp_path / "b.json")])
    assert done.exit_code == 0 and "nothing to sweep" in done.output
    assert json.loads((tmp_path / "b.json").read_text())["sweep"] is None
    bad = CliRunner().invoke(main, ["bench", "processbench", "--data-dir", str(shared_data), "--sweep", "0.5,x"])
    assert bad.exit_code == 2 and "--sweep" in bad.output
