"""Solving strategies (stepdata solve): StepCo's verify-then-revise and best-of-N, end to end over a real socket.

The policy is a scripted OpenAI-protocol server (as in test_pipeline_pairs): it reads the
request (the question, the steps written so far, or the revision prompt) and writes each
problem's steps right or wrong as the problem's role says, so every verdict of the exact
verifier, every stop and every token is known in advance. The judge verifier is a real
JudgeLocalizer answered by the same server.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer

from cli import main
from stepdata.embedded import make_problems
from stepdata.generation import make_generator
from stepdata.io import read_table, write_table
from stepdata.localize import Localization
from stepdata.localize.exact import exact_first_error
from stepdata.prompts import load_prompt
from stepdata.settings import SettingError
from stepdata.solve import SolveConfig, SolveStage, run_solve, wilson_interval
from stepdata.solve.stage import describe_score
from stepdata.solve.verdicts import verdict_of
from stepdata.steps import join_steps, split_steps, strip_partial_overlap

PARTIAL = load_prompt("step_by_step").render(question="")[-1]["content"]
PROBLEMS = make_problems(4, seed=11, min_steps=3, max_steps=3)
BY_QUESTION = PROBLEMS.set_index("question")
# each problem's role: fix (first attempt wrong at step 2, any revision right), stuck (every attempt wrong at
# step 2 with the same answer), wander (wrong at step 2 with a new answer each time), right (right at once)
ROLES = dict(zip(PROBLEMS.problem_id, ("fix", "stuck", "wander", "right")))
TOKENS = 5  # the server's completion tokens per choice
JUDGE_TOKENS = 11 + TOKENS  # a judge call as the server bills it: prompt + completion


def gold_steps(problem) -> list[str]:
    return split_steps(strip_partial_overlap(PARTIAL, problem.solution))


def values(problem) -> list[int]:
    return [s["value"] for s in json.loads(problem.meta)["steps"]]


def wrong(step: str, value: int, offset: int) -> str:
    return step.replace(f"= {value} ", f"= {value + offset} ").replace(f"answer is {value}.",
                                                                      f"answer is {value + offset}.")


def solution_from(problem, k: int, offset: int) -> str:
    """The problem's gold steps from step k on, from step 1 (0-based) wrong by ``offset`` when offset > 0."""
    gold, vals = gold_steps(problem), values(problem)
    return join_steps(wrong(g, vals[j], offset) if offset and j >= 1 else g for j, g in enumerate(gold) if j >= k)


def judge_reply(content: str) -> str:
    """A judge that answers as the exact checker would (ProcessBench protocol: the first wrong index, -1: none)."""
    problem = next(p for p in PROBLEMS.itertuples() if p.question in content)
    steps = re.findall(r"(?s)<paragraph_\d+>\n?(.*?)\n?</paragraph_\d+>", content)
    found = exact_first_error(steps, problem.meta)
    return f"Checked each paragraph. \\boxed{{{found.error_step if found.status == 'error' else -1}}}"


class Policy:
    """The scripted model: answers first attempts, continuations and revision prompts by each problem's role."""

    def __init__(self) -> None:
        self.seen: Counter = Counter()  # policy requests per problem
        self.revision_prompts: list[str] = []

    def __call__(self, body: dict, index: int) -> str:
        messages = body["messages"]
        if messages[-1]["role"] == "user":  # the judge's request: one user message, nothing to continue
            return judge_reply(messages[-1]["content"])
        user, content = messages[-2]["content"], messages[-1]["content"]
        if user.startswith("Here is a math problem"):  # the revision prompt
            self.revision_prompts.append(user)
            problem = next(p for p in PROBLEMS.itertuples() if p.question in user)
            k = int(re.search(r"Step (\d+):$", content).group(1)) - 1
            return self._write(problem, k)[len(f"Step {k + 1}:"):] if k else self._write(problem, k)
        problem = BY_QUESTION.loc[user]
        written = content[len(PARTIAL):]
        return self._write(problem, len(split_steps(written)) if written else 0)

    def _write(self, problem, k: int) -> str:
        role = ROLES[problem.problem_id]
        self.seen[problem.problem_id] += 1
        revision = self.seen[problem.problem_id] > 1
        offset = {"right": 0, "fix": 0 if revision else 1, "stuck": 1, "wander": self.seen[problem.problem_id]}[role]
        return solution_from(problem, k, offset)


def counting(generator):
    """The generator with every ``generate`` call's request keys recorded (the engine itself is untouched)."""
    calls: list[list[str]] = []
    original = generator.generate

    def generate(requests, sampling, **kwargs):
        calls.append([r.request_id for r in requests])
        return original(requests, sampling, **kwargs)

    generator.generate = generate
    return calls


def plain(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain records, every missing value None (a table read back spells nulls its own way)."""
    return [{k: None if pd.isna(v) else v for k, v in row.items()} for row in frame.to_dict("records")]


def attempts_of(row) -> list[dict]:
    return json.loads(row["attempts"])


def test_stepco_revises_from_the_rejected_step_keeps_the_prefix_and_stops_as_it_should(tmp_path):
    policy = Policy()
    with FaultyOpenAIServer(reply_body=policy, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        calls = counting(generator)
        config = SolveConfig(strategy="stepco", verifier="exact", max_iterations=2)
        rows, stats = run_solve(generator, PROBLEMS, str(tmp_path / "solved.parquet"), config, progress=False)
        served = sum(s["completion_tokens"] for s in server.served)
    rows = rows.set_index("problem_id")
    expect = {"fix": ("accepted", 1, True), "stuck": ("answers_agree", 1, False),
              "wander": ("max_iterations", 2, False), "right": ("accepted", 0, True)}
    for pid, role in ROLES.items():
        row = rows.loc[pid]
        stop, iterations, correct = expect[role]
        assert (row.stop_reason, row.iterations, row.correct) == (stop, iterations, correct), role
        tries = attempts_of(row)
        assert len(tries) == iterations + 1
        assert row.policy_tokens == TOKENS * len(tries) == sum(t["policy_tokens"] for t in tries)
        assert row.completion == tries[-1]["completion"] and row.answer == tries[-1]["answer"]
        for before, after in zip(tries, tries[1:]):
            # the verifier rejected step 2 (index 1); the revision starts there, the step before kept byte for byte
            assert before["verdict"]["status"] == "rejected" and before["verdict"]["step"] == 1
            assert after["revised_from"] == 1
            kept = split_steps(before["completion"])[0]
            assert after["completion"].startswith(kept)
    assert attempts_of(rows.loc[PROBLEMS.problem_id[1]])[-1]["verdict"] is None  # agreeing answers: not verified
    wander = attempts_of(rows.loc[PROBLEMS.problem_id[2]])
    assert len({t["answer"] for t in wander}) == 3 and wander[-1]["verdict"]["status"] == "rejected"
    # batched: the first attempts in one call, then one call per revision round with every problem still revising
    assert calls == [list(PROBLEMS.problem_id), [f"{p}:rev1" for p in PROBLEMS.problem_id[:3]],
                     [f"{PROBLEMS.problem_id[2]}:rev2"]]
    assert rows.policy_tokens.sum() == served and rows.verifier_tokens.sum() == 0  # exact costs no tokens
    assert stats["accuracy"] == 0.5 and stats["ci95"] == wilson_interval(2, 4)
    assert stats["stop_reasons"] == {"accepted": 2, "answers_agree": 1, "max_iterations": 1}
    assert stats["tokens_per_problem"]["policy"] == served / 4


def test_judge_verifier_tokens_are_counted_apart_from_the_policy(tmp_path):
    policy = Policy()
    with FaultyOpenAIServer(reply_body=policy, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        config = SolveConfig(strategy="stepco", verifier="judge", verifier_options=("votes=1",), max_iterations=2)
        rows, stats = run_solve(generator, PROBLEMS.iloc[[0, 3]], str(tmp_path / "judged.parquet"), config,
                                progress=False)
        judged = [s for s in server.served if "<paragraph_0>" in s["key"]]
        made = [s for s in server.served if "<paragraph_0>" not in s["key"]]
    rows = rows.set_index("problem_id")
    assert list(rows.stop_reason) == ["accepted", "accepted"] and list(rows.iterations) == [1, 0]
    assert rows.verifier_calls.sum() == len(judged) == 3  # fix: two attempts verified; right: one
    assert rows.verifier_tokens.sum() == JUDGE_TOKENS * len(judged) == stats["verifier_tokens"]
    assert rows.policy_tokens.sum() == TOKENS * len(made) == stats["policy_tokens"]


def test_a_judge_verifier_on_its_own_engine_gets_every_verification_and_the_policy_none(tmp_path):
    policy, judge = Policy(), Policy()
    with FaultyOpenAIServer(reply_body=policy, tokens_per_choice=TOKENS) as server, \
            FaultyOpenAIServer(reply_body=judge, tokens_per_choice=TOKENS) as judge_server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        config = SolveConfig(strategy="stepco", verifier="judge", verifier_options=("votes=1",), max_iterations=2,
                             verifier_model="judge-model", verifier_base_url=judge_server.base_url)
        rows, stats = run_solve(generator, PROBLEMS.iloc[[0, 3]], str(tmp_path / "judged.parquet"), config,
                                progress=False)
        policy_served, judge_served = list(server.served), list(judge_server.served)
    assert list(rows.set_index("problem_id").stop_reason) == ["accepted", "accepted"]
    assert judge_served and all("<paragraph_0>" in s["key"] for s in judge_served)
    assert not any("<paragraph_0>" in s["key"] for s in policy_served)
    assert stats["verifier_tokens"] == JUDGE_TOKENS * len(judge_served) and stats["verifier_calls"] == 3
    with pytest.raises(SettingError, match="'rules' takes no generator") as refused:
        SolveConfig(strategy="stepco", verifier="rules", verifier_model="judge-model")  # rules reads no model
    assert refused.value.name == "verifier_model"


def test_prompt_revision_renders_our_template_with_the_attempt_the_step_and_its_score(tmp_path):
    policy = Policy()
    fix = PROBLEMS.iloc[[0]]
    with FaultyOpenAIServer(reply_body=policy, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        config = SolveConfig(strategy="stepco", verifier="exact", revision="prompt")
        rows, _ = run_solve(generator, fix, str(tmp_path / "prompted.parquet"), config, progress=False)
    (prompt,) = policy.revision_prompts
    first = attempts_of(rows.iloc[0])[0]
    steps = split_steps(first["completion"])
    assert fix.question.iloc[0] in prompt
    assert f"Step 1: {steps[0].strip()}\nStep 2: " in prompt  # the attempt, numbered from 1
    assert "first doubts Step 2 (its confidence that the step is right: not scored (exact rejects it" in prompt
    revised = attempts_of(rows.iloc[0])[1]
    assert revised["completion"].startswith(steps[0] + "Step 2:") and revised["revised_from"] == 1
    assert rows.iloc[0].stop_reason == "accepted" and bool(rows.iloc[0].correct)
    assert revised["completion"] == join_steps(gold_steps(fix.iloc[0]))


def test_best_of_n_majority_and_verifier_pick_differently(tmp_path):
    # four samples: sample 0 right, samples 1-3 wrong with the same answer; majority picks wrong, exact picks right
    problem = PROBLEMS.iloc[0]

    def reply(body, index):
        return solution_from(problem, 0, 0 if index == 0 else 1)

    with FaultyOpenAIServer(reply_body=reply, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        config = SolveConfig(strategy="best-of-n", n=4, verifier="exact", select="both")
        rows, stats = run_solve(generator, PROBLEMS.iloc[[0]], str(tmp_path / "bon.parquet"), config, progress=False)
    row = rows.iloc[0]
    assert row.correct_verifier and not row.correct_majority and row.correct  # the row gives the verifier's pick
    assert row.answer == row.answer_verifier == problem.answer and row.answer_majority != problem.answer
    assert row.stop_reason == "selected" and row.policy_tokens == 4 * TOKENS and len(attempts_of(row)) == 4
    assert stats["by_verifier"]["accuracy"] == 1.0 and stats["by_majority"]["accuracy"] == 0.0
    majority = SolveConfig(strategy="best-of-n", n=4, verifier="none", select="majority")
    with FaultyOpenAIServer(reply_body=reply, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        rows, _ = run_solve(generator, PROBLEMS.iloc[[0]], str(tmp_path / "maj.parquet"), majority, progress=False)
    assert rows.iloc[0].answer == rows.iloc[0].answer_majority != problem.answer and rows.iloc[0].verifier_calls == 0


def test_a_failed_problem_is_retried_on_resume_and_the_rows_match_a_clean_run(tmp_path):
    config = SolveConfig(strategy="stepco", verifier="exact", max_iterations=2)
    failing = {PROBLEMS.question.iloc[0]: ["400"]}  # the first attempt at problem 0 is refused once
    with FaultyOpenAIServer(reply_body=Policy(), script=failing, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        out = str(tmp_path / "resumed.parquet")
        first, _ = run_solve(generator, PROBLEMS, out, config, batch_size=2, progress=False)
        assert first.error.notna().tolist() == [True, False, False, False]
        before = len(server.served)
        server.reply_body.seen[PROBLEMS.problem_id[0]] = 0  # the refused request never reached the model
        resumed, stats = run_solve(generator, PROBLEMS, out, config, batch_size=2, progress=False)
        retried = {s["key"] for s in server.served[before:]}
    assert retried == {PROBLEMS.question.iloc[0]}  # only the failed problem was generated again (and revised)
    with FaultyOpenAIServer(reply_body=Policy(), tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        clean, _ = run_solve(generator, PROBLEMS, str(tmp_path / "clean.parquet"), config, batch_size=2,
                             progress=False)
    columns = [c for c in clean.columns if c != "model"]
    assert resumed.error.isna().all()
    assert plain(resumed[columns]) == plain(clean[columns]) == plain(read_table(out, kind="solved")[columns])


def test_bad_settings_are_refused_naming_the_setting():
    for kwargs, name in [({"verifier": "nope"}, "verifier"), ({"verifier": "none"}, "verifier"),
                         ({"verifier": "rules", "verifier_options": ("votes=3",)}, "verifier_options"),
                         ({"strategy": "best-of-n", "n": 4, "temperature": 0}, "temperature"),
                         ({"max_iterations": 0}, "max_iterations"), ({"temperature": 0}, "temperature")]:
        with pytest.raises(SettingError) as caught:
            SolveConfig(**kwargs)
        assert caught.value.name == name
    with pytest.raises(ValueError, match="partial answer"):
        SolveStage(None, SolveConfig(template="judge_stepdpo"))


def test_solve_command_writes_the_table_and_a_summary_with_a_confidence_interval(tmp_path):
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    out = tmp_path / "solved.parquet"
    with FaultyOpenAIServer(reply_body=Policy(), tokens_per_choice=TOKENS) as server:
        args = ["solve", str(problems), "--model", "policy", "--backend", "openai", "--base-url", server.base_url,
                "--strategy", "stepco", "--verifier", "exact", "--max-iterations", "2", "--out", str(out)]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "accuracy 50.0% (95% CI 15.0-85.0%)" in result.output
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["stage_stats"]["ci95"] == list(wilson_interval(2, 4))
    assert len(read_table(out, kind="solved")) == 4


def test_a_recipe_solve_step_stops_each_problem_as_the_stage_does_and_a_rerun_asks_nothing(tmp_path):
    recipe = tmp_path / "solve.yaml"
    with FaultyOpenAIServer(reply_body=Policy(), tokens_per_choice=TOKENS) as server:
        recipe.write_text(f"out: {tmp_path / 'run'}\nengine: {{backend: openai, base_url: '{server.base_url}'}}\n"
                          "steps:\n  - {do: make-problems, name: problems, out: problems.parquet, n: 4, seed: 11, "
                          "min_steps: 3, max_steps: 3}\n  - {do: solve, input: '@problems', model: policy, out: solved.parquet, "
                          "config: {strategy: stepco, verifier: exact, max_iterations: 2}}\n")
        first = CliRunner().invoke(main, ["run", str(recipe)])
        served = len(server.served)
        again = CliRunner().invoke(main, ["run", str(recipe)])
        assert len(server.served) == served  # the finished step is read back, nothing is asked again
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    rows = read_table(tmp_path / "run" / "solved.parquet", kind="solved").set_index("problem_id")
    assert dict(rows.stop_reason) == {p: {"fix": "accepted", "stuck": "answers_agree", "wander": "max_iterations",
                                          "right": "accepted"}[ROLES[p]] for p in PROBLEMS.problem_id}


def test_eval_strategy_stepco_solves_each_model_and_writes_its_rows(tmp_path):
    problems = tmp_path / "problems.parquet"
    write_table(PROBLEMS, problems, "problems")
    with FaultyOpenAIServer(reply_body=Policy(), tokens_per_choice=TOKENS) as server:
        args = ["eval", "--model", "policy", "--backend", "openai", "--base-url", server.base_url, "--data",
                str(problems), "--strategy", "stepco", "--temperature", "0.8", "--verifier", "exact",
                "--max-iterations", "2", "--out", str(tmp_path / "eval")]
        result = CliRunner().invoke(main, args)
    with FaultyOpenAIServer(reply_body=Policy(), tokens_per_choice=TOKENS) as server:
        args[6] = server.base_url
        greedy = CliRunner().invoke(main, [*args[:9], "--strategy", "greedy"])
    assert result.exit_code == 0, result.output
    assert "accuracy 50.0% (95% CI 15.0-85.0%)" in result.output
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["results"][0]["accuracy"] == 0.5 and report["results"][0]["rows_file"] == "00-policy.solved.parquet"
    assert greedy.exit_code == 0 and "25.0%" in greedy.output  # today's eval: only the right-at-once problem


@requires_torch
def test_stepco_with_a_real_tiny_model_keeps_each_prefix_and_counts_every_token(tmp_path, tiny_model_dir):
    """The same loop on the hf backend with a random tiny model: its text is noise, so only what holds for any
    text is checked (a revision starts with the kept steps; policy tokens are the attempts' tokens)."""
    config = SolveConfig(strategy="stepco", verifier="exact", max_iterations=1, max_tokens=12)
    with make_generator("hf", str(tiny_model_dir)) as generator:
        rows, stats = run_solve(generator, PROBLEMS.iloc[:2], str(tmp_path / "tiny.parquet"), config, progress=False)
    assert rows.error.isna().all() and stats["problems"] == 2 and rows.iterations.sum() > 0  # it did revise
    for row in rows.to_dict("records"):
        tries = attempts_of(row)
        assert row["policy_tokens"] == sum(t["policy_tokens"] for t in tries) > 0
        assert len(tries) == row["iterations"] + 1 <= 2
        for before, after in zip(tries, tries[1:]):
            kept = join_steps(split_steps(before["completion"])[: after["revised_from"]])
            assert after["completion"].startswith(kept)


def test_a_solve_block_travels_to_a_worker_without_its_engine_or_verifier():
    from stepdata.generation.engine_config import EngineConfig

    block = SolveStage(EngineConfig(backend="hf", model="/nowhere"), SolveConfig(verifier="exact"))
    block._verifier_for(PROBLEMS)
    copy = pickle.loads(pickle.dumps(block))
    assert copy._verifier is None and copy.config == block.config and copy.engine_config == block.engine_config


def test_a_localizer_answer_reads_as_a_verdict_and_a_prm_gets_the_threshold():
    prm = Localization(2, "error", evidence={"step_scores": [0.9, 0.7, 0.2, 0.6]}, method="prm", calls=1, tokens=40)
    rejected = verdict_of(prm, 4, "min")
    assert (rejected.status, rejected.step, rejected.score, rejected.step_score) == ("rejected", 2, 0.2, 0.2)
    assert verdict_of(prm, 4, "last").score == 0.6 and rejected.tokens == 40
    assert "0.20" in describe_score(rejected)
    assert verdict_of(Localization(None, "unfinished", method="exact"), 3).step == 2  # a cut attempt: its last step
    assert verdict_of(Localization(None, "unknown", method="rules"), 3).status == "undecided"
    assert verdict_of(Localization(-1, "no_error", method="exact"), 3).score == 1.0
    assert verdict_of(Localization(None, "unknown", error="judge: HTTP 500"), 3).status == "failed"
    assert verdict_of(Localization(7, "error"), 3).status == "undecided"  # a step past the attempt's end
    options = SolveConfig(verifier="prm", verifier_options=("prm_model=/models/prm",), threshold=0.3)
    assert options.verifier_build_options() == {"prm_model": "/models/prm", "threshold": 0.3}
    given = SolveConfig(verifier="prm", verifier_options=("prm_model=/models/prm", "threshold=0.7"))
    assert given.verifier_build_options()["threshold"] == 0.7
    assert "threshold" not in SolveConfig(verifier="rules").verifier_build_options()


def test_a_judge_is_not_shown_the_reference_solution_at_inference(tmp_path):
    right = PROBLEMS.iloc[[3]]  # solved at once
    judged: list[str] = []
    policy = Policy()

    def reply(body, index):
        if body["messages"][-1]["role"] == "user":  # the stepdpo judge
            judged.append(body["messages"][-1]["content"])
            return "Every step checks out.\nDecision: none"
        return policy(body, index)

    with FaultyOpenAIServer(reply_body=reply, tokens_per_choice=TOKENS) as server:
        generator = make_generator("openai", "policy", base_url=server.base_url)
        config = SolveConfig(strategy="stepco", verifier="judge", verifier_options=("votes=1", "protocol=stepdpo"))
        rows, _ = run_solve(generator, right, str(tmp_path / "judged.parquet"), config, progress=False)
    (prompt,) = judged
    assert rows.iloc[0].stop_reason == "accepted"
    # the gold solution appears once: as the student's (this problem's policy writes it), never as the reference
    assert "Reference solution:\n(none given)" in prompt and prompt.count(right.solution.iloc[0].strip()) == 1


def test_a_problems_table_without_a_question_is_refused_naming_the_row(tmp_path):
    bad = PROBLEMS.copy()
    bad.loc[2, "question"] = " "
    with pytest.raises(ValueError, match=r"problems row 2 \(problem_id 'arith-s11-000002'\): field question"):
        run_solve(None, bad, str(tmp_path / "bad.parquet"), SolveConfig(verifier="exact"), progress=False)
    with pytest.raises(ValueError, match=r"column\(s\) \['answer'\] missing"):
        run_solve(None, PROBLEMS.drop(columns="answer"), str(tmp_path / "bad.parquet"), progress=False)
