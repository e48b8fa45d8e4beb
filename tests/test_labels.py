"""Labels the pairs inherit, at the level of stages: stated answers, unfinished samples, per-kind caps,
SCDPO's divergence step, sDPO's order and verified chosen steps.

Each test here fails on the code before the answer policy existed (issue "Labels you can
trust") and uses only interfaces that existed then, so the failure is an assertion, not an
import error. Stage tests drive real stages over a real socket, with a scripted
OpenAI-protocol server playing the policy. Unit tests of the new parts are in
test_answer_policy.py.
"""

from __future__ import annotations

import json

import pandas as pd
from conftest import requires_train
from fake_openai_server import FaultyOpenAIServer

from stepdata.embedded import make_problems
from stepdata.generation.openai_backend import OpenAIGenerator
from stepdata.pairs import make_pair, prompt_messages_of
from stepdata.pairs.filters import FilterConfig, apply_filters
from stepdata.pipeline import SampleConfig, SampleStage
from stepdata.pipeline.pairing import attempt_row, attempts_frame, flatten_pairs
from stepdata.prompts import load_prompt

MESSAGES = prompt_messages_of(load_prompt("step_by_step").render(question="q"))


# --- 1. an answer must be stated; unfinished is never correct (stage level) -----------------------

def _server_replies(key, seed, index):
    if key.startswith("Marker"):
        return " I am not sure.\nStep 5: Let me"  # old code read "5" from the step marker
    if key.startswith("Dangling"):
        return " We compute.\nStep 2: 7 * 2 ="
    if key.startswith("Empty box"):
        return " 2 + 3 = 5.\nStep 2: \\boxed{\\text{}}"
    return " 2 + 3 = 5.\nStep 2: The answer is 5."


def _problem(pid, question, answer):
    return {"problem_id": pid, "question": question, "answer": answer, "solution": None, "source": "t", "meta": None}


def test_sample_labels_only_stated_answers_and_records_a_wrong_answer_as_wrong(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = pd.DataFrame([_problem("marker", "Marker: what is 2 + 3?", "5"),
                             _problem("dangling", "Dangling: what is 7 * 2?", "2"),
                             _problem("box", "Empty box: what is 2 + 3?", "5"),
                             _problem("ok", "Fine: what is 2 + 3?", "5")])
    with FaultyOpenAIServer(reply_text=_server_replies) as server:
        stage = SampleStage(OpenAIGenerator("m", base_url=server.base_url), SampleConfig(n=1))
        rows = stage(problems).set_index("problem_id")
    assert rows.correct.to_dict() == {"marker": False, "dangling": False, "box": False, "ok": True}
    assert rows.pred_answer.isna().to_dict() == {"marker": True, "dangling": True, "box": False, "ok": False}
    assert rows.error.isna().all()  # the empty box is a wrong answer, not a gold-answer error
    stats = stage.stats(rows.reset_index())
    assert stats["no_answer"] == 2 and stats["unfinished"] == 0


def test_sample_counts_unfinished_rollouts_and_never_calls_them_correct(tiny_model_dir):
    from stepdata.generation import make_generator

    problems = pd.DataFrame([_problem("p", "What is 2 + 3?", "5")])
    with make_generator("hf", str(tiny_model_dir)) as generator:
        stage = SampleStage(generator, SampleConfig(n=3, max_tokens=4, temperature=1.0))
        rows = stage(problems)
    assert (rows.finish_reason == "length").all()
    assert rows.correct.eq(False).all() and rows.pred_answer.isna().all()
    assert stage.stats(rows)["unfinished"] == 3


# --- 5. caps are per kind -------------------------------------------------------------------------

def _pair(kind, n):
    return make_pair(problem_id="p", question="q", answer="5", prompt_messages=MESSAGES,
                     prefix_steps=[] if kind == "dpo" else [" 1 + 1 = 2.\n"], chosen=f"right {n}",
                     rejected=f"wrong {n}", kind=kind, error_step=None if kind == "dpo" else 1)


def test_a_dpo_pair_does_not_take_an_scdpo_pairs_place_under_the_cap():
    attempts = attempts_frame([attempt_row("u1", "p", "synthesize", "pairs",
                                           pairs=[_pair("scdpo", 1), _pair("scdpo", 2), _pair("dpo", 3)]),
                               attempt_row("u2", "p", "synthesize", "pairs",
                                           pairs=[_pair("scdpo", 4), _pair("dpo", 5)])])
    pairs, capped = flatten_pairs(attempts, max_per_problem=2)
    assert pairs.kind.value_counts().to_dict() == {"scdpo": 2, "dpo": 2}
    assert capped == 1


# --- 7. SCDPO's error step is where the continuation first differs ---------------------------------

def _policy_that_repeats_the_cut_step_then_errs(problems):
    """Stage 4's policy: its first generated step is the original step, every later one is off by one."""
    from test_pipeline_pairs import PARTIAL, _wrong, gold_steps

    by_question = problems.set_index("question")

    def reply(body, index):
        question, content = body["messages"][-2]["content"], body["messages"][-1]["content"]
        problem = by_question.loc[question]
        gold = gold_steps(problem)
        values = [s["value"] for s in json.loads(problem.meta)["steps"]]
        written = content[len(PARTIAL):]
        first_of_branch = not written.endswith("\nStep")
        done = len([s for s in gold if written.startswith("".join(gold[: gold.index(s) + 1]))])
        i = min(done, len(gold) - 1)
        text = gold[i] if first_of_branch else _wrong(gold[i], values[min(i, len(values) - 1)])
        if written.endswith("\nStep"):
            text = text[len("Step"):]
        return text.rstrip("\n")

    return reply


def test_synthesize_error_step_is_the_first_step_that_differs(tmp_path, monkeypatch):
    from test_pipeline_pairs import gold_steps

    from stepdata.generation import make_generator
    from stepdata.pipeline.synthesize import (
        SynthesizeConfig,
        run_synthesize,
        synthesis_units,
    )

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = make_problems(3, seed=5, min_steps=3, max_steps=3)
    units, _ = synthesis_units(problems=problems)
    with FaultyOpenAIServer(reply_body=_policy_that_repeats_the_cut_step_then_errs(problems)) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        pairs, stats = run_synthesize(generator, units, problems, str(tmp_path / "scdpo.parquet"),
                                      SynthesizeConfig(rounds=1), max_pairs_per_problem=None, progress=False)
    assert len(pairs)
    for pair in pairs.itertuples():
        gold = gold_steps(problems.set_index("problem_id").loc[pair.problem_id])
        k = pair.error_step
        assert list(pair.prefix_steps) == gold[:k]
        assert pair.chosen == "".join(gold[k:])
        assert not pair.rejected.startswith(gold[k])  # the rejected side differs from its first step on
    # every cut regenerated its own step unchanged, so no pair's error step is a cut point's step 0
    assert 0 not in set(pairs.error_step)


# --- 8. sDPO without rollouts: easiest first -------------------------------------------------------

@requires_train
def test_sdpo_fallback_order_puts_the_deepest_first_error_first():
    from trainers.staged import problem_order

    pairs = pd.DataFrame({"problem_id": ["hard", "easy", "mid"],
                          "prefix_steps": [[], ["a", "b", "c"], ["a"]]})
    assert problem_order(pairs) == ["easy", "mid", "hard"]


# --- 13. chosen steps that failed their check stay out of training data ----------------------------

def _verified_pairs():
    return pd.DataFrame([make_pair(problem_id=f"p{i}", question="q", answer="5", prompt_messages=MESSAGES,
                                   prefix_steps=[" 1 + 1 = 2.\n"], chosen=f"Step 2: {i} + 1 = {i + 1}.\n",
                                   rejected=f"Step 2: {i} + 1 = {i + 7}.\n", kind="step-dpo", error_step=1,
                                   chosen_verified=verified)
                         for i, verified in enumerate([True, False, None])])


def test_export_filters_leave_out_chosen_steps_that_failed_their_check():
    kept, dropped = apply_filters(_verified_pairs())
    assert kept.chosen_verified.tolist() == [True, None]
    assert dropped.drop_filter.tolist() == ["unverified"]
    kept, dropped = apply_filters(_verified_pairs(), FilterConfig(keep_unverified=True))
    assert len(kept) == 3 and dropped.empty


@requires_train
def test_trainer_data_step_leaves_out_unverified_chosen_steps(tiny_model_dir):
    from transformers import AutoTokenizer

    from trainers.data import tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples, report = tokenize_pairs(tokenizer, _verified_pairs())
    assert len(examples) == 2 and report.dropped_by_reason == {"unverified": 1}
    examples, _ = tokenize_pairs(tokenizer, _verified_pairs(), keep_unverified=True)
    assert len(examples) == 3


# --- unfinished sides never end their solution -----------------------------------------------------

def test_a_side_cut_at_max_tokens_never_ends_its_solution():
    pair = make_pair(problem_id="p", question="q", answer="5", prompt_messages=MESSAGES, prefix_steps=[],
                     chosen="right", rejected="cut off mid", kind="dpo", error_step=None, rejected_finished=False)
    assert pair["chosen_ends_solution"] is True and pair["rejected_ends_solution"] is False


def test_rectify_records_unfinished_solutions_and_a_cut_rejected_side_gets_no_eos(tmp_path, monkeypatch):
    from test_pipeline_pairs import PROBLEMS, localized_rows, scripted_policy

    from stepdata.generation import make_generator
    from stepdata.pipeline.rectify import RectifyConfig, run_rectify

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    rows = localized_rows().head(2).assign(status="error", finish_reason="stop")
    rows.loc[0, ["status", "error_step"]] = ["unfinished", None]  # stopped before its last step, no error seen
    cut = list(rows.loc[1, "steps"])[:2]  # sampling stopped at max_tokens right after the wrong step
    rows.at[1, "steps"], rows.at[1, "completion"], rows.at[1, "finish_reason"] = cut, "".join(cut), "length"
    with FaultyOpenAIServer(reply_body=scripted_policy(right_indices={0, 1}, never_right=set())) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        pairs, stats = run_rectify(generator, rows, PROBLEMS, str(tmp_path / "p.parquet"), RectifyConfig(n=2),
                                   progress=False)
    assert stats["outcomes"] == {"unfinished": 1, "pairs": 1}
    (pair,) = pairs.itertuples()
    assert pair.rejected_full.endswith(cut[1]) and pair.rejected_ends_solution is False


def test_sample_never_calls_a_sample_cut_at_max_tokens_correct(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    cut = {"text": " 2 + 3 = 5.\nStep 2: The answer is 5. So then we", "finish_reason": "length"}
    problems = pd.DataFrame([_problem("p", "What is 2 + 3?", "5")])
    with FaultyOpenAIServer(reply_body=lambda body, index: cut) as server:
        stage = SampleStage(OpenAIGenerator("m", base_url=server.base_url), SampleConfig(n=2))
        rows = stage(problems)
    assert rows.finish_reason.tolist() == ["length", "length"]
    assert rows.correct.tolist() == [False, False] and rows.error.isna().all()
    assert stage.stats(rows)["unfinished"] == 2


# --- 6. a step that ended at end-of-sequence ends the solution -------------------------------------

def test_synthesize_never_extends_a_step_that_ended_at_eos(tmp_path, monkeypatch):
    from stepdata.generation import make_generator
    from stepdata.pipeline.synthesize import (
        SynthesizeConfig,
        run_synthesize,
        synthesis_units,
    )

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    problems = make_problems(2, seed=7, min_steps=3, max_steps=3)
    units, _ = synthesis_units(problems=problems)
    seen: list[str] = []

    def ends_without_an_answer(body, index):
        seen.append(body["messages"][-1]["content"])
        return {"text": "Step 9: 1 + 1 = 2.", "finish_reason": "stop", "stop_reason": None}  # EOS, no answer

    with FaultyOpenAIServer(reply_body=ends_without_an_answer, send_stop_reason=True) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        pairs, stats = run_synthesize(generator, units, problems, str(tmp_path / "scdpo.parquet"),
                                      SynthesizeConfig(rounds=1, cuts=1), progress=False)
    assert seen and not any(content.endswith("\nStep") for content in seen)  # never asked to go on
    assert len(pairs) == 0 and stats["outcomes"] == {"no_usable_negative": 2}
