"""The OpenAI backend against a misbehaving local server: every request finishes or is reported."""

import logging

import pytest
from fake_openai_server import FaultyOpenAIServer

from stepdata.generation import GenerationRequest, SamplingConfig
from stepdata.generation.openai_backend import OpenAIGenerator


def make(server, **options):
    defaults = dict(base_url=server.base_url, max_retries=4, backoff_base=0.01, backoff_max=0.05,
                    request_timeout=1.0, max_concurrency=4)
    return OpenAIGenerator("test-model", **(defaults | options))


def ask(key):
    return GenerationRequest.chat(key, [{"role": "user", "content": key}])


def test_transient_faults_are_retried_and_nothing_is_lost_or_doubled(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    script = {
        "r429": ["429", "429", "ok"],
        "r500": ["500", "ok"],
        "slow": ["slow", "ok"],
        "drop": ["drop", "drop", "ok"],
        "malformed": ["malformed", "ok"],
        "nochoices": ["nochoices", "ok"],
        "fine": [],
    }
    sampling = SamplingConfig(n=3, temperature=0.8, max_tokens=16, seed=5)
    with FaultyOpenAIServer(script) as server, caplog.at_level(logging.WARNING):
        generator = make(server)
        results = generator.generate([ask(k) for k in script], sampling)
    assert [r.request_id for r in results] == list(script)
    for result in results:
        assert result.ok, result.error
        assert len(result.completions) == 3
        indices = [c.text.split("|i=")[1] for c in result.completions]
        assert indices == ["0", "1", "2"]
        assert all(c.text.startswith(result.request_id + "|") for c in result.completions)
    # each request was answered exactly once by a successful reply
    assert sorted(s["key"] for s in server.served) == sorted(script)
    assert generator.last_stats.retries == 2 + 1 + 1 + 2 + 1 + 1
    assert "sk-test-secret-value" not in caplog.text
    assert "retry" in caplog.text


def test_permanent_errors_and_exhausted_retries_are_reported_per_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    script = {"bad": ["400"], "hopeless": ["500"] * 10, "fine": []}
    with FaultyOpenAIServer(script) as server:
        generator = make(server, max_retries=2)
        results = generator.generate([ask(k) for k in script], SamplingConfig(n=2, max_tokens=4))
    by_id = {r.request_id: r for r in results}
    assert "HTTP 400" in by_id["bad"].error and "injected 400" in by_id["bad"].error
    assert server.attempts["bad"] == 1, "a 400 is never retried"
    assert "gave up after 3 attempts" in by_id["hopeless"].error and server.attempts["hopeless"] == 3
    assert by_id["fine"].ok and len(by_id["fine"].completions) == 2
    assert all(r.completions == [] for r in results if not r.ok)
    assert generator.last_stats.failed_requests == 2


def test_a_server_that_ignores_n_is_detected_and_fanned_out(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(ignore_n=True) as server:
        generator = make(server)
        results = generator.generate([ask("a"), ask("b")], SamplingConfig(n=4, max_tokens=4, seed=1))
    assert generator.server_ignores_n
    for result in results:
        assert len(result.completions) == 4
        seeds = [c.text.split("|seed=")[1].split("|")[0] for c in result.completions]
        assert len(set(seeds)) == 4, "each fanned-out sample has its own seed"
    assert "server ignores n" in " ".join(generator.last_stats.notes)


def test_completions_endpoint_and_raw_prompts(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer() as server:
        generator = make(server, endpoint="completions")
        results = generator.generate([GenerationRequest.raw("p", "Once upon")], SamplingConfig(n=2, max_tokens=4))
        assert [c.text for c in results[0].completions] == [f"Once upon|seed={results[0].completions[0].text.split('seed=')[1].split('|')[0]}|i={i}" for i in range(2)]
        # a chat on the completions endpoint needs a tokenizer for the template
        chat = generator.generate([ask("c")], SamplingConfig(max_tokens=4))[0]
    assert not chat.ok and "tokenizer" in chat.error


def test_api_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIGenerator("gpt-4o-mini")
