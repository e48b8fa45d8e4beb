"""Stage 1 on awkward input: every case is a recorded row outcome, never a crash or a silent drop."""

import pandas as pd
from fake_openai_server import FaultyOpenAIServer

from stepdata.generation.openai_backend import OpenAIGenerator
from stepdata.io import to_arrow
from stepdata.pipeline import SampleConfig, SampleStage


def replies(key, seed, index):
    if key.startswith("Empty"):
        return ""
    if key.startswith("Silent"):
        return " I am not sure how to proceed.\nStep 2: Let me think again."
    return " 2 + 2 = 4.\nStep 2: The answer is 4."


def test_awkward_problems_become_recorded_rows(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = pd.DataFrame([
        {"problem_id": "ok", "question": "Normal: what is 2 + 2?", "answer": "4", "solution": None, "source": "t", "meta": None},
        {"problem_id": "nogold", "question": "No gold: what is 2 + 2?", "answer": None, "solution": None, "source": "t", "meta": None},
        {"problem_id": "empty", "question": "Empty reply please", "answer": "4", "solution": None, "source": "t", "meta": None},
        {"problem_id": "silent", "question": "Silent model", "answer": "4", "solution": None, "source": "t", "meta": None},
    ])
    with FaultyOpenAIServer(reply_text=replies) as server:
        stage = SampleStage(OpenAIGenerator("m", base_url=server.base_url), SampleConfig(n=2))
        rows = stage(problems)
    to_arrow(rows, "rollouts")  # a valid rollouts table
    by = rows.groupby("problem_id")
    assert by.size().to_dict() == {"empty": 2, "nogold": 2, "ok": 2, "silent": 2}
    ok = by.get_group("ok")
    assert ok.correct.tolist() == [True, True] and ok.error.isna().all()
    assert ok.steps.iloc[0] == [" 2 + 2 = 4.\n", "Step 2: The answer is 4."]
    nogold = by.get_group("nogold")
    assert nogold.correct.isna().all() and nogold.error.str.startswith("gold_answer").all()
    empty = by.get_group("empty")
    assert empty.correct.tolist() == [False, False] and empty.steps.iloc[0] == [] and empty.error.isna().all()
    silent = by.get_group("silent")
    # "Step 2:" is a step marker, not an answer: only an explicitly stated answer counts
    assert silent.pred_answer.isna().all() and silent.correct.tolist() == [False, False]
    stats = stage.stats(rows)
    assert stats["judged_samples"] == 6 and stats["accuracy"] == round(2 / 6, 4)
    assert stats["problems_all_wrong"] == 2 and stats["problems_with_a_correct_sample"] == 1
