"""Why a sample ended (``stop_reason``), request token totals, and seed=None sampling.

The hf tests run a tiny random model built offline; the OpenAI tests run against the
local fake server, which speaks the real protocol (and can send vLLM's ``stop_reason``).
"""

import json

import pytest
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer
from generation_checks import chat, texts

from stepdata.generation import GenerationRequest, SamplingConfig, make_generator
from stepdata.generation.openai_backend import OpenAIGenerator

# The values of stepdata.generation.STOP_EOS and STOP_LENGTH (imported in their own test, so that the
# other tests check behaviour and fail one by one on code without them)
EOS, LENGTH = "eos", "length"


def test_stop_constants_are_exported():
    import stepdata.generation as generation
    from stepdata.generation import types

    assert (generation.STOP_EOS, generation.STOP_LENGTH) == (types.STOP_EOS, types.STOP_LENGTH) == (EOS, LENGTH)
    assert {"STOP_EOS", "STOP_LENGTH"} <= set(generation.__all__)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with make_generator("hf", str(tiny_model_dir), batch_size=4) as generator:
        yield generator


# -- hf: stop_reason -----------------------------------------------------------------------

@requires_torch
def test_hf_reports_length_when_cut_at_max_tokens(tiny):
    result = tiny.generate([chat("l", "Ada has 5 marbles.")], SamplingConfig(temperature=0, max_tokens=5))[0]
    (completion,) = result.completions
    assert completion.finish_reason == "length" and completion.completion_tokens == 5
    assert completion.stop_reason == LENGTH


@requires_torch
def test_hf_reports_the_stop_string_that_ended_the_text(tiny):
    """Two stop strings completed by one token: the one completing first in the text is reported, whatever
    the order they were given in, and the text is cut where it begins."""
    greedy = SamplingConfig(temperature=0, max_tokens=40)
    free = tiny.generate([chat("s", "Ada has 5 marbles.")], greedy)[0].completions[0]
    ids, decode = free.token_ids, lambda part: tiny.tokenizer.decode(part, skip_special_tokens=True)
    for k in range(len(ids)):
        before, upto = decode(ids[:k]), decode(ids[: k + 1])
        word = upto[len(before):]
        first, second = word[:-1], word[1:]
        # both must first occur inside token k, one character apart
        if (upto.startswith(before) and len(word) >= 3 and upto.find(first) == len(before)
                and upto.find(second) == len(before) + 1):
            break
    else:
        pytest.fail(f"no token of 3+ characters in the greedy text {decode(ids)!r}")
    stopped = tiny.generate([chat("s", "Ada has 5 marbles.")],
                            SamplingConfig(temperature=0, max_tokens=40, stop=(second, first)))[0].completions[0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == first
    assert stopped.text == before and stopped.completion_tokens == k + 1


@requires_torch
def test_hf_reports_eos_when_the_model_ends(tiny_model_dir):
    """A token in the model's end-of-sequence ids ends the sample as "eos". The random model rarely picks
    its own EOS, so a token greedy decoding emits is declared an extra EOS id (as models with
    several, e.g. end-of-turn and end-of-text, declare in generation_config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    greedy = SamplingConfig(temperature=0, max_tokens=12)
    request = chat("e", "Ada has 5 marbles.")
    with make_generator("hf", model, tokenizer=tokenizer) as generator:
        ids = generator.generate([request], greedy)[0].completions[0].token_ids
    index = max(i for i, token in enumerate(ids) if token not in ids[:i])  # greedy may loop: its last new token
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, ids[index]]
    with make_generator("hf", model, tokenizer=tokenizer) as generator:
        completion = generator.generate([request], SamplingConfig(temperature=0, max_tokens=12,
                                                                  stop=("no such stop string",)))[0].completions[0]
    assert completion.finish_reason == "stop" and completion.stop_reason == EOS
    assert completion.token_ids == ids[: index + 1] and completion.completion_tokens == index + 1


@requires_torch
def test_hf_request_totals(tiny):
    result = tiny.generate([chat("t", "How many?")], SamplingConfig(n=3, temperature=1.0, max_tokens=7, seed=2))[0]
    assert result.usage_completion_tokens == 21 == result.completion_tokens_total
    assert result.total_tokens == result.prompt_tokens + 21
    assert tiny.last_stats.completion_tokens == 21


# -- hf: seed=None -------------------------------------------------------------------------

@requires_torch
def test_hf_seed_none_gives_different_samples(tiny):
    """With seed=None the n samples must be independent draws, not n copies of one seeded draw. At T=1 a
    random model spreads its probability over hundreds of tokens, so two independent 32-token samples
    coincide with probability far below 1e-50: equal samples mean equal seeds."""
    sampling = SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_tokens=32, seed=None)
    first = texts(tiny.generate([chat("r", "Ada has 5 marbles.")], sampling))[0]
    assert len(set(first)) >= 2, "seed=None gave n identical samples"
    again = texts(tiny.generate([chat("r", "Ada has 5 marbles.")], sampling))[0]
    assert again != first, "seed=None is not reproducible: another call draws other samples"


# -- openai: stop_reason -------------------------------------------------------------------

REPLIES = {"stop": "one two\nthree four", "eos": "one two", "long": " ".join(f"w{i}" for i in range(20))}


def scripted(body, index):
    """A reply per question: one that hits the stop string, one that ends, one longer than max_tokens."""
    key = body["messages"][0]["content"] if "messages" in body else body["prompt"]
    return REPLIES[key]


def make(server, endpoint="chat"):
    return OpenAIGenerator("test-model", base_url=server.base_url, endpoint=endpoint, max_retries=0,
                           request_timeout=5.0)


def ask(key, endpoint):
    return chat(key, key) if endpoint == "chat" else GenerationRequest.raw(key, key)


def ended(server, endpoint, stop=("\n",)):
    generator = make(server, endpoint)
    results = generator.generate([ask(k, endpoint) for k in REPLIES], SamplingConfig(max_tokens=8, stop=stop))
    assert all(r.ok for r in results), [r.error for r in results]
    return {r.request_id: r.completions[0] for r in results}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_openai_stop_reason_from_a_vllm_server(monkeypatch, endpoint):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(reply_body=scripted, emulate_stops=True, send_stop_reason=True) as server:
        by_key = ended(server, endpoint)
    assert (by_key["stop"].text, by_key["stop"].finish_reason, by_key["stop"].stop_reason) == ("one two", "stop", "\n")
    assert (by_key["eos"].finish_reason, by_key["eos"].stop_reason) == ("stop", EOS)
    assert (by_key["long"].finish_reason, by_key["long"].stop_reason) == ("length", LENGTH)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_openai_stop_reason_from_a_server_that_does_not_say(monkeypatch, endpoint):
    """Without vLLM's field a "stop" is an unknown stop when stop strings were requested, EOS otherwise."""
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(reply_body=scripted, emulate_stops=True) as server:
        with_stops = ended(server, endpoint)
        without_stops = ended(server, endpoint, stop=())
    assert with_stops["stop"].text == "one two" and with_stops["stop"].stop_reason is None
    assert with_stops["eos"].finish_reason == "stop" and with_stops["eos"].stop_reason is None
    assert with_stops["long"].stop_reason == LENGTH
    assert without_stops["eos"].stop_reason == EOS and without_stops["long"].stop_reason == LENGTH


def test_openai_stop_token_id_counts_as_eos(monkeypatch):
    """vLLM reports a stop token id (an int) in stop_reason: the model ended by itself."""
    monkeypatch.setenv("OPENAI_API_KEY", "x")

    def reply(body, index):
        return {"text": "done", "finish_reason": "stop", "stop_reason": 151645}

    with FaultyOpenAIServer(reply_body=reply, send_stop_reason=True) as server:
        result = make(server).generate([ask("q", "chat")], SamplingConfig(stop=("\n",)))[0]
    assert result.completions[0].stop_reason == EOS


# -- openai: token totals ------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("n", [1, 2])
def test_openai_completion_tokens_are_the_servers_usage(monkeypatch, endpoint, n):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(tokens_per_choice=9) as server:
        generator = make(server, endpoint)
        results = generator.generate([ask("a", endpoint), ask("b", endpoint)], SamplingConfig(n=n, max_tokens=16))
    assert all(r.ok and len(r.completions) == n for r in results)
    assert generator.last_stats.completion_tokens == 2 * 9 * n  # was 0 for n > 1: usage is per request, not choice
    usage = {s["key"]: s["completion_tokens"] for s in server.served}
    for result in results:
        assert result.usage_completion_tokens == result.completion_tokens_total == usage[result.request_id] == 9 * n
        assert result.total_tokens == 11 + 9 * n


def test_openai_usage_is_added_up_over_fanned_out_calls(monkeypatch):
    """A server that ignores n is asked once per sample: the request's total is the sum of those replies."""
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(ignore_n=True, tokens_per_choice=9) as server:
        generator = make(server)
        result = generator.generate([ask("a", "chat")], SamplingConfig(n=3, max_tokens=16, seed=1))[0]
    assert generator.server_ignores_n and len(server.served) == 3
    assert generator.last_stats.completion_tokens == 27
    assert result.usage_completion_tokens == sum(s["completion_tokens"] for s in server.served) == 27


def test_cli_generate_reports_the_servers_completion_tokens(monkeypatch):
    """`stepdata generate --backend openai --n 2` used to report 0 completion tokens."""
    from click.testing import CliRunner

    from cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with FaultyOpenAIServer(tokens_per_choice=9) as server:
        run = CliRunner().invoke(main, ["generate", "--backend", "openai", "--model", "m",
                                        "--base-url", server.base_url, "--prompt", "Once upon", "--n", "2"])
    assert run.exit_code == 0, run.output
    printed = json.loads(run.stdout[run.stdout.index("{"):])
    assert printed["stats"]["completion_tokens"] == 18
    assert printed["completion_tokens"] == 18
