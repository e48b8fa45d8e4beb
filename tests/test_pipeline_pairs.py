"""Stages 3 and 4 end to end over a real socket: a scripted OpenAI-protocol server plays the policy.

The server answers from the request itself: it reads the partial answer, works
out which step comes next, and writes that step right or wrong as the test
decides, so every pair the stages make can be predicted exactly. (Runs with real
models are in the quickstart test.)
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fake_openai_server import FaultyOpenAIServer

from stepdata.embedded import make_problems
from stepdata.generation import make_generator
from stepdata.io import read_table
from stepdata.localize.exact import check_step, exact_first_error
from stepdata.pairs import partial_answer
from stepdata.pipeline.rectify import RectifyConfig, run_rectify
from stepdata.pipeline.synthesize import (
    SynthesizeConfig,
    run_synthesize,
    synthesis_units,
)
from stepdata.prompts import load_prompt
from stepdata.steps import STEP_MARKER, join_steps, split_steps, strip_partial_overlap

PARTIAL = load_prompt("step_by_step").render(question="")[-1]["content"]
PROBLEMS = make_problems(4, seed=11, min_steps=3, max_steps=4)


def gold_steps(problem) -> list[str]:
    return split_steps(strip_partial_overlap(PARTIAL, problem.solution))


def _problem_for(question: str):
    return PROBLEMS.set_index("question").loc[question]


def _wrong(step: str, value: int) -> str:
    return step.replace(f"= {value} ", f"= {value + 1} ").replace(f"answer is {value}.", f"answer is {value + 1}.")


def scripted_policy(right_indices: set[int], never_right: set[str]):
    """A reply function: writes the next gold step, made wrong unless the sample index is in ``right_indices``
    and the solution so far is right; problems in ``never_right`` are never solved."""

    def reply(body: dict, index: int) -> str:
        messages = body["messages"]
        question, content = messages[-2]["content"], messages[-1]["content"]
        problem = _problem_for(question)
        meta = json.loads(problem.meta)
        gold = gold_steps(problem)
        body_so_far = content[len(PARTIAL):]
        if body_so_far.endswith("\nStep"):
            body_so_far = body_so_far[: -len("Step")]
        written = split_steps(body_so_far) if body_so_far else []
        complete = [s for s in written if s.endswith("\n")]
        so_far_right = all(check_step(s, i, [g["value"] for g in meta["steps"]]).right for i, s in enumerate(complete))
        i = len(complete)
        step = gold[i] if i < len(gold) else gold[-1]
        value = meta["steps"][min(i, len(gold) - 1)]["value"]
        right = so_far_right and index in right_indices and problem.problem_id not in never_right
        text = step if right else _wrong(step, value)
        if content.endswith("\nStep"):  # stage 4 sent the marker the model had started
            text = text[len("Step"):]
        if body.get("stop"):  # stage 4 asks for one step at a time
            return text.rstrip("\n")
        return text + join_steps(gold[i + 1:]) if right else text + join_steps(
            _wrong(g, meta["steps"][min(j, len(gold) - 1)]["value"]) for j, g in enumerate(gold[i + 1:], start=i + 1))

    return reply


def localized_rows() -> pd.DataFrame:
    rows = []
    for p in PROBLEMS.itertuples():
        meta = json.loads(p.meta)
        gold = gold_steps(p)
        k = 1
        steps = gold[:k] + [_wrong(g, meta["steps"][j]["value"]) for j, g in enumerate(gold[k:], start=k)]
        error_step = exact_first_error(steps, p.meta).error_step
        assert error_step == k
        rows.append({"rollout_id": f"{p.problem_id}:0", "problem_id": p.problem_id, "completion": join_steps(steps),
                     "steps": steps, "error_step": error_step, "method": "exact", "correct": False, "error": None})
    p0 = PROBLEMS.iloc[0]
    rows.append(rows[0] | {"rollout_id": f"{p0.problem_id}:1", "error_step": None})  # not localized
    rows.append(rows[0] | {"rollout_id": f"{p0.problem_id}:2", "error_step": 9})  # past the end
    rows.append(rows[0] | {"rollout_id": f"{p0.problem_id}:3", "completion": "something else"})  # text changed
    return pd.DataFrame(rows)


def test_rectify_pairs_each_right_continuations_first_step_with_the_wrong_step(tmp_path):
    never = {PROBLEMS.problem_id[3]}
    policy = scripted_policy(right_indices={0, 1, 2}, never_right=never)
    out = tmp_path / "stepdpo.parquet"
    with FaultyOpenAIServer(reply_body=policy) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        pairs, stats = run_rectify(generator, localized_rows(), PROBLEMS, str(out), RectifyConfig(n=4),
                                   batch_size=3, progress=False)
        served = len(server.served)
        # the same command again: everything is done, nothing is generated twice
        again, _ = run_rectify(generator, localized_rows(), PROBLEMS, str(out), RectifyConfig(n=4),
                               batch_size=3, progress=False)
        assert len(server.served) == served
    assert stats["outcomes"] == {"pairs": 3, "no_correct_continuation": 1, "no_error_step": 1, "prefix_mismatch": 2}
    # three right continuations per rollout are the same text: one distinct chosen step each
    assert len(pairs) == 3 and pairs.equals(again)
    table = read_table(out, kind="pairs")
    assert len(table) == 3
    for pair in table.itertuples():
        problem = PROBLEMS.set_index("problem_id").loc[pair.problem_id]
        gold = gold_steps(problem)
        assert list(pair.prefix_steps) == gold[:1]
        assert pair.chosen == gold[1] and pair.rejected != pair.chosen and pair.error_step == 1
        assert pair.chosen_verified is True and pair.kind == "step-dpo" and not pair.chosen_ends_solution
        assert pair.chosen_full == partial_answer(pair.prompt_messages) + join_steps(gold)
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet", kind="attempts")
    assert set(attempts.unit_id) == set(localized_rows().rollout_id)  # every unit has its recorded outcome
    summary = json.loads((tmp_path / "stepdpo.parquet.summary.json").read_text())
    assert summary["stage_stats"]["pairs"] == 3


def test_synthesize_keeps_the_first_wrong_round_and_pairs_it_with_the_original(tmp_path):
    policy = scripted_policy(right_indices={0}, never_right=set())
    units, left_out = synthesis_units(problems=PROBLEMS)
    assert left_out == {"no_solution": 0} and len(units) == 4
    out = tmp_path / "scdpo.parquet"
    with FaultyOpenAIServer(reply_body=policy) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        pairs, stats = run_synthesize(generator, units, PROBLEMS, str(out), SynthesizeConfig(rounds=2),
                                      max_pairs_per_problem=2, batch_size=2, progress=False)
    attempts = read_table(tmp_path / "scdpo.attempts.parquet", kind="attempts")
    assert attempts.detail.str.contains("still_right").all()  # round 0 reached the right answer and was dropped
    assert stats["outcomes"] == {"pairs": 4}
    per_problem = pairs.groupby("problem_id").size()
    assert (per_problem == 2).all() and stats["capped_per_problem"] > 0
    for pair in pairs.itertuples():
        problem = PROBLEMS.set_index("problem_id").loc[pair.problem_id]
        gold = gold_steps(problem)
        k = pair.error_step
        assert list(pair.prefix_steps) == gold[:k]
        assert pair.chosen == join_steps(gold[k:]) and pair.chosen_ends_solution
        # round 0 stayed right (dropped as still_right); round 1 went wrong at the cut and stayed wrong
        assert exact_first_error(gold[:k] + split_steps(pair.rejected), problem.meta)[0] == k
        assert STEP_MARKER.search(pair.rejected) or k == 0


def test_synthesize_temperature_schedule():
    config = SynthesizeConfig()
    assert [config.temperature(i) for i in range(6)] == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.4, 1.4])
    assert SynthesizeConfig(schedule=(0.7, 0.9)).temperature(5) == 0.9
