"""The Continuer: exact continuation from a prefix, labels read from the continuation alone."""

from __future__ import annotations

import pytest
from fake_openai_server import FaultyOpenAIServer

from stepdata.answers import AnswerPolicy
from stepdata.generation import SamplingConfig, make_generator
from stepdata.pipeline.continuer import Continuer, Prefix
from stepdata.prompts import load_prompt


def test_the_answer_is_read_from_the_continuation_not_the_prefix(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    sent = []

    def reply(body, index):
        sent.append(body["messages"][-1]["content"])
        return {"text": "Step 3: we stop here." if index == 0 else "Step 3: The answer is 5.",
                "finish_reason": "length" if index == 2 else "stop"}

    prefix = Prefix("u1", "What is 2 + 3?", " 2 + 3 = 5.\nStep 2: The answer is 5.\n", gold="5")
    with FaultyOpenAIServer(reply_body=reply) as server:
        continuer = Continuer(make_generator("openai", "m", base_url=server.base_url), load_prompt("step_by_step"),
                              AnswerPolicy())
        (done,) = continuer.continue_and_label([prefix], SamplingConfig(n=3, max_tokens=32))
    assert sent[0].endswith(prefix.text)  # the partial answer extended by the prefix, byte for byte
    assert [label.outcome for label in done.labels] == ["no_answer", "correct", "unfinished"]
    assert done.tokens == 15  # the server's usage for the request


def test_a_template_without_a_partial_answer_cannot_be_continued():
    with pytest.raises(ValueError, match="partial assistant answer"):
        Continuer(None, load_prompt("judge_processbench"), AnswerPolicy())  # type: ignore[arg-type]
