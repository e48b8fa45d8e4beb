import json
import re

from stepdata import (
    answers_match,
    extract_answer,
    make_problems,
    split_steps,
    write_table,
)
from stepdata.answers.safe_expr import evaluate_exact

CLAIM = re.compile(r"(\d+ [-+*/] \d+) = (\d+)")


def test_every_gold_step_is_exactly_checkable_and_right(tmp_path):
    df = make_problems(300, seed=11)
    write_table(df, tmp_path / "p.parquet", "problems")
    counts = set()
    for row in df.itertuples():
        meta = json.loads(row.meta)
        steps = split_steps(row.solution)
        # the last split step also carries "The answer is N."
        assert len(steps) == meta["n_steps"] == len(meta["steps"])
        counts.add(len(steps))
        for step, expected in zip(steps, meta["steps"]):
            (expr, value), = CLAIM.findall(step)
            assert expr == expected["expr"]
            assert evaluate_exact(expr) == int(value) == expected["value"]
        assert extract_answer(row.solution) == row.answer
        assert answers_match(row.answer, str(meta["steps"][-1]["value"]))
        assert all(0 < s["value"] <= 5000 for s in meta["steps"])
    assert counts == {2, 3, 4, 5, 6}


def test_seeded_and_prefix_stable():
    a = make_problems(20, seed=5)
    b = make_problems(8, seed=5)
    assert a.head(8).equals(b)
    assert not make_problems(8, seed=6).question.equals(b.question)
    assert a.problem_id.is_unique


def test_step_range_option():
    df = make_problems(30, seed=1, min_steps=3, max_steps=3)
    assert {json.loads(m)["n_steps"] for m in df.meta} == {3}
