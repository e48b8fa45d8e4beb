"""Best-of-k read from a best-of-n table (first k samples, another verifier) equals what the stage picks.

The policy is the scripted OpenAI-protocol server of test_solve: sample 1 of each problem is right,
samples 0, 2 and 3 are wrong with the same answer, so majority vote and the verifier disagree at k=2 and
k=4 and agree (wrong) at k=1.
"""

from __future__ import annotations

import pandas as pd
import pytest
from fake_openai_server import FaultyOpenAIServer
from test_solve import PROBLEMS, TOKENS, solution_from

from stepdata.audit.svg import point_chart
from stepdata.generation import make_generator
from stepdata.solve import SolveConfig, run_solve
from stepdata.solve.rescore import best_of_k, verify_stored
from stepdata.solve.selection import majority_pick, verifier_pick

TWO = PROBLEMS.iloc[[0, 1]]


def test_majority_votes_numbers_together_and_breaks_ties_by_first_seen():
    assert majority_pick(["4", "3", "3.0", None]) == 1  # 3 and 3.0 are one answer
    assert majority_pick(["4", "3", "3", "4"]) == 0  # a tie goes to the answer seen first
    assert majority_pick([None, None]) == 0
    assert verifier_pick([0.0, 1.0, 1.0], ["1", None, "2"]) == 2  # a tie goes to the attempt with an answer
    assert verifier_pick([0.2, 0.9, 0.4], [None, None, None]) == 1


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("rescore")

    def reply(body, index):
        problem = next(p for p in TWO.itertuples() if p.question in body["messages"][-2]["content"])
        return solution_from(problem, 0, 0 if index == 1 else 1)

    config = SolveConfig(strategy="best-of-n", n=4, verifier="exact", select="both")
    with FaultyOpenAIServer(reply_body=reply, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        rows, stats = run_solve(generator, TWO, str(out / "bon.parquet"), config, progress=False)
    return rows, stats, config


@pytest.mark.parametrize("verifier", ["exact", "rules"])
def test_reselection_of_all_n_equals_the_stage_and_the_first_k_pick_as_by_hand(sampled, verifier):
    rows, stats, config = sampled
    verdicts = verify_stored(rows, TWO, SolveConfig(strategy="best-of-n", n=4, verifier=verifier))
    assert [v.status for v in verdicts[str(TWO.problem_id.iloc[0])]] == ["rejected", "accepted", "rejected",
                                                                          "rejected"]
    whole = best_of_k(rows, 4, verdicts)
    assert whole["by_verifier"]["accuracy"] == stats["by_verifier"]["accuracy"] == 1.0
    assert whole["by_majority"]["accuracy"] == stats["by_majority"]["accuracy"] == 0.0
    assert whole["policy_tokens"] == 4 * TOKENS and whole["verifier_tokens"] == 0
    one, two = best_of_k(rows, 1, verdicts), best_of_k(rows, 2, verdicts)
    assert one["by_verifier"]["accuracy"] == one["by_majority"]["accuracy"] == 0.0  # sample 0 alone is wrong
    assert two["by_verifier"]["accuracy"] == 1.0 and two["by_majority"]["accuracy"] == 0.0  # tie: first seen
    assert one["policy_tokens"] == TOKENS and two["policy_tokens"] == 2 * TOKENS
    assert two["by_verifier"]["ci95"][0] < 1.0 == two["by_verifier"]["ci95"][1]


def test_asking_for_more_samples_than_were_drawn_is_refused_naming_a_problem(sampled):
    rows, _, _ = sampled
    with pytest.raises(ValueError, match=r"best-of-8 needs 8 attempts per problem; problem '.+' has 4"):
        best_of_k(rows, 8)


def test_a_failed_row_counts_as_wrong_and_is_not_dropped(sampled):
    rows, _, _ = sampled
    failed = rows.copy()
    failed.loc[0, "error"] = "request failed"
    verdicts = verify_stored(failed, TWO, SolveConfig(strategy="best-of-n", n=4, verifier="exact"))
    assert verdicts[str(TWO.problem_id.iloc[0])] == []
    result = best_of_k(pd.DataFrame(failed), 2, verdicts)
    assert result["problems"] == 2 and result["by_verifier"]["correct"] == 1 and result["by_verifier"][
        "accuracy"] == 0.5


def test_the_accuracy_against_tokens_plot_places_points_and_escapes_labels():
    svg = point_chart("t", [("best-of-2 <x>", 100.0, 40.0, 30.0, 50.0), ("greedy", 50.0, 20.0, 10.0, 30.0)],
                      "tokens", "accuracy")
    assert svg.count("<circle") == 2 and "best-of-2 &lt;x&gt;" in svg and "<x>" not in svg
    assert point_chart("t", [], "x", "y").count("no data") == 1


def test_labels_of_points_close_together_do_not_overlap_each_other_or_the_points():
    from stepdata.audit.svg import _label_places

    points = [(300.0, 200.0, "stepco-exact"), (302.0, 203.0, "stepco-rules"), (305.0, 201.0, "best-of-4 (exact)"),
              (305.0, 199.0, "best-of-4 (rules)"), (590.0, 100.0, "best-of-8 (majority)")]
    places = _label_places(points, right_edge=600.0)
    boxes = []
    for (x, _, label), (text_x, baseline, anchor) in zip(points, places):
        width = 5.0 * len(label)
        left = text_x - width if anchor == "end" else text_x
        boxes.append((left, baseline - 8, left + width, baseline + 2))
    assert places[-1][2] == "end"  # it would run past the right edge: drawn to the left of its point
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
        for x, y, _ in points:
            assert not (a[0] < x < a[2] and a[1] < y < a[3])
