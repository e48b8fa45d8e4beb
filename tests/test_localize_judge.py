"""The judge localizer: robust parsing, majority vote, and a run over a real socket."""

import pandas as pd
import pytest
from fake_openai_server import FaultyOpenAIServer

from stepdata import make_problems
from stepdata.generation.openai_backend import OpenAIGenerator
from stepdata.localize.judge import (
    JudgeItem,
    JudgeLocalizer,
    parse_boxed_index,
    parse_step_verdicts,
)
from stepdata.pipeline.localize import LocalizeStage


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Paragraph 1 adds wrongly. \\boxed{1}", 1),
        ("all fine \\boxed{-1}", -1),
        ("first \\boxed{0} then I changed my mind: \\boxed{2}", 2),
        ("no box here, the error is in paragraph 1", None),
        ("\\boxed{7}", None),  # out of range
        ("\\boxed{one}", None),
        ("\\boxed{1", None),  # unbalanced
        ("", None),
    ],
)
def test_boxed_index_parsing(reply, expected):
    assert parse_boxed_index(reply, 3) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Step 1: correct\nStep 2: incorrect\nStep 3: correct", 1),
        ("Step 1: correct\nStep 2: neutral\nStep 3: incorrect", 1),
        ("**Step 1:** correct\n**Step 2:** correct\n**Step 3:** correct", -1),
        ("Step 1: correct\nStep 3: incorrect", None),  # step 2 missing before the error
        ("I think it is fine.", None),
    ],
)
def test_step_verdict_parsing(reply, expected):
    assert parse_step_verdicts(reply, 3) == expected


def judge_replies(key, seed, index):
    """A scripted judge: most votes say paragraph 1, one says 2, one is unreadable."""
    return ["The mistake is in \\boxed{1}", "\\boxed{1}", "maybe \\boxed{2}", "I cannot tell", "\\boxed{1}"][index]


def test_majority_vote_over_http(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(reply_text=judge_replies) as server:
        judge = JudgeLocalizer(OpenAIGenerator("judge", base_url=server.base_url), votes=5)
        items = [JudgeItem("a", "What is 2+2?", ["2 + 2 = 4", "so 5", "answer 5"]), JudgeItem("b", "Q", [])]
        first, empty = judge.localize(items)
    assert first.error_step == 1 and first.votes == [1, 1, 2, 1] and first.unreadable == 1
    assert first.confidence == pytest.approx(3 / 5) and first.calls == 1
    assert empty.error_step is None and empty.error == "no steps to judge"


def test_rules_then_judge_in_the_stage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = make_problems(2, seed=3)
    base = {"prompt": "p", "completion": "c", "pred_answer": "1", "correct": False, "finish_reason": "stop",
            "model": "m", "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None}
    rollouts = pd.DataFrame([
        base | {"problem_id": problems.problem_id[0], "rollout_id": "r0", "steps": ["2 * 3 = 7\n", "done"]},
        base | {"problem_id": problems.problem_id[1], "rollout_id": "r1", "steps": ["We add them.\n", "So 5.", "End."]},
    ])
    with FaultyOpenAIServer(reply_text=judge_replies) as server:
        judge = OpenAIGenerator("judge", base_url=server.base_url)
        out = LocalizeStage("rules+judge", problems=problems, generator=judge, votes=5)(rollouts).set_index("rollout_id")
        assert server.attempts.get(problems.question[0]) is None, "rules found r0's error: no judge call"
    assert out.method["r0"] == "rules" and out.error_step["r0"] == 0 and out.localizer_calls["r0"] == 0
    assert out.method["r1"] == "judge" and out.error_step["r1"] == 1 and list(out.votes["r1"]) == [1, 1, 2, 1]
    with pytest.raises(ValueError, match="needs option.*generator"):
        LocalizeStage("judge")
    with pytest.raises(ValueError, match="needs the problems table"):
        LocalizeStage("judge", generator=judge)
