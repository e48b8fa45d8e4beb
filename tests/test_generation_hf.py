"""transformers backend on a tiny random model (and SmolLM2 for end-of-turn behaviour)."""

import pytest
from conftest import requires_torch
from generation_checks import chat, continuation_is_exact, texts

from stepdata.generation import GenerationRequest, SamplingConfig, make_generator
from stepdata.generation.templates import render_prompt

pytestmark = requires_torch


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with make_generator("hf", str(tiny_model_dir), batch_size=4) as generator:
        yield generator


def test_n_samples_per_request_and_token_counts(tiny):
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=12, seed=7)
    results = tiny.generate([chat("a", "How many?"), chat("b", "Ada has 5 marbles.")], sampling)
    assert [len(r.completions) for r in results] == [3, 3]
    for result in results:
        assert result.prompt_tokens == len(tiny.tokenizer(result.prompt_text, add_special_tokens=False).input_ids)
        for completion in result.completions:
            assert completion.finish_reason == "length" and completion.completion_tokens == 12
    assert len(set(texts(results)[0])) > 1, "samples of one request must differ"
    stats = tiny.last_stats
    assert stats.samples == 6 and stats.completion_tokens == 72 and stats.failed_requests == 0


def test_seeds_reproduce_per_request_and_sample_whatever_the_batch(tiny):
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=10, seed=3)
    alone = tiny.generate([chat("x", "Ada has 5 marbles.")], sampling)
    crowded = tiny.generate([chat("y", "Other question?"), chat("x", "Ada has 5 marbles."), chat("z", "A third")], sampling)
    assert texts(alone)[0] == texts(crowded)[1]
    other_seed = tiny.generate([chat("x", "Ada has 5 marbles.")], SamplingConfig(n=2, temperature=1.0, max_tokens=10, seed=4))
    assert texts(other_seed)[0] != texts(alone)[0]


def test_stop_strings_end_the_sample_and_are_not_included(tiny):
    sampling = SamplingConfig(n=4, temperature=1.0, max_tokens=40, seed=1, stop=(" ", "e"))
    result = tiny.generate([chat("s", "Ada has 5 marbles.")], sampling)[0]
    stopped = [c for c in result.completions if c.finish_reason == "stop"]
    assert stopped, "a random model emits a space or an 'e' within 40 tokens"
    for completion in stopped:
        assert " " not in completion.text and "e" not in completion.text


def test_partial_answer_tokens_follow_the_generation_prompt_directly(tiny):
    """The model sees: template once, generation prompt, then the partial answer's tokens; nothing between."""
    question, partial = "Ada has 12 marbles.", "Step 1: After buying 5 more, Ada has 12 + 5 = 17 marbles.\nStep 2:"
    answered = tiny.render(chat("a", question))
    continued = tiny.render(chat("c", question, partial=partial))
    assert continued == answered + partial
    result = tiny.generate([chat("c", question, partial=partial)], SamplingConfig(temperature=0, max_tokens=4))[0]
    encode = lambda text: tiny.tokenizer(text, add_special_tokens=False).input_ids
    assert result.prompt_tokens == len(encode(answered + partial))
    assert encode(answered + partial)[: len(encode(answered))] == encode(answered)


@pytest.mark.slow
def test_prefix_continuation_is_exact_on_smollm2(smollm2_dir):
    with make_generator("hf", str(smollm2_dir)) as generator:
        assert continuation_is_exact(generator, "Ada has 12 marbles and buys 5 more. How many does she have?") > 0


def test_trailing_newline_of_a_partial_answer_is_kept(tiny):
    request = chat("nl", "Q?", partial="Step 1: 2 + 2 = 4.\n")
    text = render_prompt(tiny.tokenizer, request)
    assert text.endswith("<|im_start|>assistant\nStep 1: 2 + 2 = 4.\n")
    assert text.count("<|im_start|>assistant") == 1 and not text.endswith("<|im_end|>\n")


def test_raw_prompts_and_bad_requests_are_per_row(tiny):
    sampling = SamplingConfig(max_tokens=5, temperature=0.7, seed=0)
    tiny.tokenizer.chat_template, saved = None, tiny.tokenizer.chat_template
    try:
        results = tiny.generate([GenerationRequest.raw("raw", "Ada has"), chat("chat", "needs a template")], sampling)
    finally:
        tiny.tokenizer.chat_template = saved
    assert results[0].ok and results[0].prompt_text == "Ada has" and len(results[0].completions) == 1
    assert not results[1].ok and "chat template" in results[1].error
    assert tiny.last_stats.failed_requests == 1


def test_greedy_with_several_samples_is_refused():
    with pytest.raises(ValueError, match="greedy"):
        SamplingConfig(n=2, temperature=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingConfig(max_tokens=0)


@pytest.mark.slow
def test_smollm2_stops_at_end_of_turn_and_continues_steps(smollm2_dir):
    with make_generator("hf", str(smollm2_dir), batch_size=8) as generator:
        result = generator.generate(
            [chat("q", "What is 2 + 3?", partial="Let's think step by step.\nStep 1:")],
            SamplingConfig(n=2, temperature=0.7, max_tokens=80, seed=0),
        )[0]
    assert result.ok and result.prompt_text.endswith("<|im_start|>assistant\nLet's think step by step.\nStep 1:")
    assert any(c.finish_reason == "stop" for c in result.completions)
    assert all("<|im_end|>" not in c.text for c in result.completions)


def test_a_failing_batch_fails_only_its_requests(tiny, monkeypatch):
    original = tiny._sample_batch
    calls = {"n": 0}

    def flaky(batch, sampling):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory (injected)")
        return original(batch, sampling)

    monkeypatch.setattr(tiny, "batch_size", 2)
    monkeypatch.setattr(tiny, "_sample_batch", flaky)
    requests = [chat("a", "Ada has 5."), chat("bb", "Bram has 7 marbles."), chat("ccc", "Chidi has 9 marbles and 2 bags.")]
    results = tiny.generate(requests, SamplingConfig(n=2, max_tokens=3, seed=0))
    failed = [r for r in results if not r.ok]
    assert failed and all("out of memory" in r.error and r.completions == [] for r in failed)
    assert all(len(r.completions) == 2 for r in results if r.ok)
    assert len(failed) < len(results)
