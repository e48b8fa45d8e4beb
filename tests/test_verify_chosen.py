"""Chosen steps checked by the verifier of the user's choice (rectify/synthesize --verify METHOD).

The policy is a scripted OpenAI-protocol server over a real socket (as in test_pipeline_pairs), so
which chosen steps are right is known: per wrong rollout, three right continuations whose first
steps are the gold step, a step with false arithmetic, and a true equation on the wrong number
(the exact checker rejects both wrong ones, the rules only the false arithmetic). The judge is a
real JudgeLocalizer, answered by the same kind of server or by the tiny random model (hf backend).
"""

from __future__ import annotations

import json
import pickle
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import requires_torch
from fake_openai_server import FaultyOpenAIServer
from test_pipeline_pairs import (
    PARTIAL,
    PROBLEMS,
    _wrong,
    gold_steps,
    localized_rows,
    scripted_policy,
)

from cli import main
from stepdata.generation import make_generator
from stepdata.generation.engine_config import EngineConfig
from stepdata.io import read_table, write_table
from stepdata.localize import Localization
from stepdata.pipeline.rectify import RectifyConfig, RectifyStage, run_rectify
from stepdata.pipeline.run import ConfigChanged
from stepdata.pipeline.synthesize import (
    SynthesizeConfig,
    run_synthesize,
    synthesis_units,
)
from stepdata.pipeline.verify import ChosenStep, ChosenVerifier, chosen_verdict
from stepdata.schema import ATTEMPTS
from stepdata.settings import SettingError, config_from_mapping
from stepdata.steps import join_steps

INDEXED = PROBLEMS.set_index("problem_id")
TRUE_BUT_WRONG = "Step 2: Counting again, 2 + 2 = 4.\n"  # a true claim on the wrong number


def _problem_for(question: str):
    return PROBLEMS.set_index("question").loc[question]


def false_step(step: str, value: int) -> str:
    """The step with false arithmetic (not the rollout's rejected step, which is off by +1)."""
    return step.replace(f"= {value} ", f"= {value - 1} ")


def policy_reply(body: dict, index: int) -> str:
    """Continue a rollout from its prefix (step 0): sample 0 the gold steps, 1 a false step 1 then the gold
    rest, 2 a true-but-wrong step 1 then the gold rest (all three reach the gold answer), 3 all wrong."""
    messages = body["messages"]
    problem = _problem_for(messages[-2]["content"])
    gold = gold_steps(problem)
    values = [s["value"] for s in json.loads(problem.meta)["steps"]]
    first = [gold[1], false_step(gold[1], values[1]), TRUE_BUT_WRONG, _wrong(gold[1], values[1])][index % 4]
    rest = join_steps(gold[2:]) if index % 4 < 3 else join_steps(_wrong(g, v) for g, v in zip(gold[2:], values[2:]))
    return first + rest


def judge_reply(content: str) -> str:
    """A judge that sees the prefix (paragraph 0) and the chosen step (paragraph 1): gold -> no error,
    false arithmetic -> paragraph 1, the true-but-wrong step -> paragraph 0 (it doubts the prefix); the
    last problem's chosen steps get a reply with no verdict in it."""
    if PROBLEMS.question.iloc[3] in content:
        return "I am not sure about this one."
    chosen = re.search(r"<paragraph_1>\n(.*?)\n</paragraph_1>", content, re.DOTALL).group(1)
    if "2 + 2 = 4" in chosen:
        return "Paragraph 0 looks off. \\boxed{0}"
    gold = [gold_steps(p)[1].strip() for p in PROBLEMS.itertuples()]
    return "All fine. \\boxed{-1}" if chosen in gold else "Paragraph 1 is wrong. \\boxed{1}"


step_by_step = scripted_policy(right_indices={0}, never_right=set())  # synthesize's, one step at a time


def reply(body: dict, index: int) -> str:
    content = body["messages"][-1]["content"]
    if "<paragraph_0>" in content:
        return judge_reply(content)
    return step_by_step(body, index) if body.get("stop") else policy_reply(body, index)


def rollouts() -> pd.DataFrame:
    return localized_rows().head(len(PROBLEMS))  # one wrong rollout per problem, first error at step 1


@pytest.fixture(scope="module")
def server():
    with FaultyOpenAIServer(reply_body=reply) as server:
        yield server


@pytest.fixture(scope="module")
def policy(server):
    return make_generator("openai", "policy", base_url=server.base_url)


def rectify(policy, out, **config):
    return run_rectify(policy, rollouts(), PROBLEMS, str(out), RectifyConfig(n=4, **config), batch_size=2,
                       progress=False)


def verdicts_of(pairs: pd.DataFrame) -> dict[str, list]:
    """chosen_verified by kind of chosen step (gold, false arithmetic, true but wrong)."""
    kinds: dict[str, list] = {"gold": [], "false": [], "true_but_wrong": []}
    for pair in pairs.itertuples():
        gold = gold_steps(INDEXED.loc[pair.problem_id])[1]
        kind = "gold" if pair.chosen == gold else "true_but_wrong" if pair.chosen == TRUE_BUT_WRONG else "false"
        kinds[kind].append(None if pd.isna(pair.chosen_verified) else bool(pair.chosen_verified))
    return kinds


@pytest.mark.parametrize("verify, action, expected, dropped", [
    ("exact", "mark", {"gold": [True] * 4, "false": [False] * 4, "true_but_wrong": [False] * 4}, 0),
    ("exact", "drop", {"gold": [True] * 4, "false": [], "true_but_wrong": []}, 8),
    ("rules", "mark", {"gold": [True] * 4, "false": [False] * 4, "true_but_wrong": [True] * 4}, 0),
    ("rules", "drop", {"gold": [True] * 4, "false": [], "true_but_wrong": [True] * 4}, 4),
    ("auto", "drop", {"gold": [True] * 4, "false": [], "true_but_wrong": []}, 8),  # embedded: exact, step alone
    ("none", "mark", {"gold": [None] * 4, "false": [None] * 4, "true_but_wrong": [None] * 4}, 0),
])
def test_rectify_marks_or_drops_what_the_verifier_rejects(policy, tmp_path, verify, action, expected, dropped):
    pairs, stats = rectify(policy, tmp_path / "stepdpo.parquet", verify=verify, verify_action=action)
    assert verdicts_of(pairs) == expected
    checked = 0 if verify == "none" else 12
    trues = sum(v is True for v in sum(expected.values(), []))
    assert stats["verify"] == {"verifier": verify, "action": action, "checked": checked, "verified_true": trues,
                               "verified_false": checked - trues, "verified_none": 0,
                               "none_reasons": {"prefix_doubted": 0, "unknown": 0, "failed": 0},
                               "dropped": dropped, "calls": 0, "tokens": 0}
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet", kind="attempts")
    assert attempts.outcome.eq("pairs").all() and attempts.error.isna().all()
    assert sum(len(json.loads(c)) for c in attempts.verify_checks) == checked
    if dropped:
        assert attempts.detail.str.contains(f"{dropped // 4} dropped").all()


def test_a_changed_verifier_is_a_changed_config(policy, tmp_path):
    out = tmp_path / "stepdpo.parquet"
    rectify(policy, out, verify="rules", verify_options={"rules_tolerance": "rounded"})
    with pytest.raises(ConfigChanged, match="verify_options"):
        rectify(policy, out, verify="rules")
    with pytest.raises(ConfigChanged, match='verify: "rules" -> "exact"'):
        rectify(policy, out, verify="exact", verify_options={})


def test_judge_verdicts_from_the_policy_engine(policy, server, tmp_path):
    """The judge (a model-based verifier) samples from the stage's own engine by default; each of its four
    answers maps to a verdict, and every call and token is recorded per attempt."""
    served = len(server.served)
    pairs, stats = rectify(policy, tmp_path / "stepdpo.parquet", verify="judge", verify_options={"votes": 1})
    judged = [s for s in server.served[served:] if "<paragraph_0>" in s["key"]]
    assert len(judged) == 12  # one request per chosen step, each with its prefix
    by_problem = {p: verdicts_of(g) for p, g in pairs.groupby("problem_id")}
    for problem_id in PROBLEMS.problem_id[:3]:
        assert by_problem[problem_id] == {"gold": [True], "false": [False], "true_but_wrong": [None]}
    assert by_problem[PROBLEMS.problem_id[3]] == {"gold": [None], "false": [None], "true_but_wrong": [None]}
    verify = stats["verify"]
    assert (verify["checked"], verify["verified_true"], verify["verified_false"], verify["verified_none"]) == (12, 3, 3, 6)
    assert verify["none_reasons"] == {"prefix_doubted": 3, "unknown": 3, "failed": 0}
    assert verify["calls"] == 12 and verify["tokens"] == 12 * (11 + 5)  # the server's usage: 11 prompt + 5 per reply
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet", kind="attempts")
    assert attempts.verify_calls.tolist() == [3, 3, 3, 3]
    reasons = [c["reason"] for cell in attempts.verify_checks for c in json.loads(cell)]
    assert sorted(set(reasons)) == ["accepted", "prefix_doubted", "rejected", "unknown"]


def test_a_verifier_failure_is_a_row_error_retried_on_resume(policy, tmp_path):
    """The judge on its own server (a separate engine, openai backend) refuses every request once: each unit
    with chosen steps becomes an error row, counted as failed; the same command redoes exactly those rows."""
    out = tmp_path / "stepdpo.parquet"
    with FaultyOpenAIServer(reply_body=reply, default=["400"]) as judge:
        config = dict(verify="judge", verify_options={"votes": 1}, verify_model="judge", verify_base_url=judge.base_url)
        _, stats = rectify(policy, out, **config)
        assert stats["outcomes"] == {"error": 4}
        assert stats["verify"]["none_reasons"]["failed"] == 12 and stats["verify"]["calls"] == 12
        attempts = read_table(tmp_path / "stepdpo.attempts.parquet", kind="attempts")
        assert attempts.error.str.startswith("verify (judge): judge: ").all()
        pairs, stats = rectify(policy, out, **config)
    assert stats["outcomes"] == {"pairs": 4} and stats["verify"]["none_reasons"]["failed"] == 0
    assert len(pairs) == 12 and stats["verify"]["verified_true"] == 3
    assert len(judge.served) == 12  # each chosen step judged once more, after its failure


@requires_torch
def test_judge_with_the_tiny_model_is_unknown_and_costed(policy, tiny_model_dir, tmp_path):
    """A random model's replies carry no verdict: every chosen step is None (unknown), nothing is dropped,
    and the judge's calls and tokens are in the attempts and the summary."""
    pairs, stats = rectify(policy, tmp_path / "stepdpo.parquet", verify="judge", verify_action="drop",
                           verify_options={"votes": 1, "judge_max_tokens": 8}, verify_model=str(tiny_model_dir),
                           verify_backend="hf")
    assert len(pairs) == 12 and pairs.chosen_verified.isna().all()
    verify = stats["verify"]
    assert verify["verified_none"] == verify["none_reasons"]["unknown"] == 12 and verify["dropped"] == 0
    assert verify["calls"] == 12 and verify["tokens"] > 12 * 8
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet", kind="attempts")
    assert attempts.verify_tokens.sum() == verify["tokens"] and (attempts.verify_calls == 3).all()
    assert read_table(tmp_path / "stepdpo.parquet", kind="pairs").attrs["stepdata"]["config"]["verify_engine"][
        "backend"] == "hf"


def test_synthesize_checks_the_original_step_in_its_context(policy, tmp_path):
    """SCDPO's chosen side is the original solution; one whose step 0 is false (its answer still right) gives a
    rejected chosen step at cut 0 and, at later cuts, a prefix the exact verifier doubts. auto checks the step
    alone, as before verifiers could be chosen."""
    units = synthesis_units(problems=PROBLEMS)[0].head(2)  # two 3-step solutions: cut points 0 and 1
    values = [s["value"] for s in json.loads(PROBLEMS.meta.iloc[0])["steps"]]
    steps = list(units.steps.iloc[0])
    assert len(steps) == 3
    units.at[0, "steps"] = [false_step(steps[0], values[0])] + steps[1:]

    def run(out, **config):
        return run_synthesize(policy, units, PROBLEMS, str(tmp_path / out),
                              SynthesizeConfig(rounds=2, max_pairs_per_problem=None, **config), progress=False)

    exact, stats = run("exact.parquet", verify="exact")
    bad = exact[exact.problem_id == PROBLEMS.problem_id[0]].set_index("error_step").chosen_verified
    assert bad.to_dict() == {0: False, 1: None}  # cut 0: the false step itself; cut 1: after it
    assert exact[exact.problem_id != PROBLEMS.problem_id[0]].chosen_verified.eq(True).all()
    assert stats["verify"]["none_reasons"]["prefix_doubted"] == 1 and stats["verify"]["verified_false"] == 1
    dropped, dstats = run("drop.parquet", verify="exact", verify_action="drop")
    assert len(dropped) == len(exact) - 1 and dstats["verify"]["dropped"] == 1
    auto, astats = run("auto.parquet")
    assert auto.sort_values(["problem_id", "error_step"]).chosen_verified.tolist() == [False, True, True, True]
    assert astats["verify"]["checked"] == 4  # the step alone: the false step 0 is not seen from cut 1


def test_verdicts_of_real_localizers_on_hand_written_steps():
    """rules and exact asked about prefix + chosen (a partial solution): an error at the chosen step is False,
    one in the prefix None (prefix doubted), none found True, a problem exact cannot check None (unknown)."""
    problem = PROBLEMS.iloc[0]
    gold = gold_steps(problem)
    values = [s["value"] for s in json.loads(problem.meta)["steps"]]
    cases = [ChosenStep("right", problem.problem_id, gold[:1], gold[1]),
             ChosenStep("false", problem.problem_id, gold[:1], false_step(gold[1], values[1])),
             ChosenStep("prefix", problem.problem_id, [_wrong(gold[0], values[0])], gold[1]),
             ChosenStep("true_but_wrong", problem.problem_id, gold[:1], TRUE_BUT_WRONG)]
    problems = PROBLEMS.set_index("problem_id")
    exact = ChosenVerifier(RectifyConfig(verify="exact"), problems).check(cases)
    assert [(v.verified, v.reason) for v in exact] == [(True, "accepted"), (False, "rejected"),
                                                       (None, "prefix_doubted"), (False, "rejected")]
    rules = ChosenVerifier(RectifyConfig(verify="rules"), problems).check(cases)
    assert [(v.verified, v.reason) for v in rules] == [(True, "accepted"), (False, "rejected"),
                                                       (None, "prefix_doubted"), (True, "accepted")]
    no_meta = problems.assign(meta=None)
    unknown = ChosenVerifier(RectifyConfig(verify="exact"), no_meta).check(cases[:1])
    assert (unknown[0].verified, unknown[0].reason, unknown[0].status) == (None, "unknown", "unknown")
    auto = ChosenVerifier(RectifyConfig(), no_meta).check([cases[0], ChosenStep("c", "x", [], "Step 1: So we go on.")])
    assert [(v.verified, v.method) for v in auto] == [(True, "rules"), (None, "rules")]
    failed = chosen_verdict(Localization(None, "unknown", method="judge", calls=1, tokens=9, error="judge: HTTP 500"), 1)
    assert (failed.verified, failed.reason, failed.tokens) == (None, "failed", 9)


def test_verify_spellings_in_python_recipes_and_the_command_line(tmp_path):
    # the old values of verify were actions: read as auto with that action, never as something else
    assert RectifyConfig(verify="drop") == RectifyConfig(verify="auto", verify_action="drop")
    assert SynthesizeConfig(verify="mark") == SynthesizeConfig(verify="auto", verify_action="mark")
    recipe = config_from_mapping(RectifyConfig, {"verify": "judge", "verify_options": {"votes": 3, "protocol": "stepdpo"}})
    assert recipe.verify_options == {"votes": 3, "protocol": "stepdpo"}
    with pytest.raises(SettingError, match=r"step.config.verify_options: .*does not take option\(s\) \['votez'\]"):
        config_from_mapping(RectifyConfig, {"verify": "judge", "verify_options": {"votez": 3}}, "step.config")
    for bad, field in [({"verify": "nope"}, "verify"), ({"verify": "none", "verify_action": "drop"}, "verify_action"),
                       ({"verify": "rules", "verify_model": "m"}, "verify_model"),
                       ({"verify": "auto", "verify_options": ("votes=3",)}, "verify_options"),
                       ({"verify": "judge", "verify_options": ("api_key=sk-1",)}, "verify_options"),
                       ({"verify": "judge", "verify_base_url": "http://x"}, "verify_base_url")]:
        with pytest.raises(SettingError) as refused:
            RectifyConfig(**bad)
        assert refused.value.name == field
    # the command line: repeated --verify-option KEY=VALUE, values read as YAML scalars
    table = tmp_path / "localized.parquet"
    table.write_text("not read: the options are refused first")
    runner = CliRunner()
    base = ["rectify", str(table), "--out", str(tmp_path / "o.parquet"), "--verify", "judge"]
    result = runner.invoke(main, [*base, "--verify-option", "votez=3"])
    assert result.exit_code == 2 and "--verify-option" in result.output and "votez" in result.output
    result = runner.invoke(main, ["rectify", str(table), "--out", str(tmp_path / "o.parquet"), "--verify", "nope"])
    assert result.exit_code == 2 and "not a registered localizer" in result.output
    config = RectifyConfig(verify="judge", verify_options=("votes=3", "judge_temperature=0.5", "protocol=stepdpo"))
    assert config.verify_options == {"votes": 3, "judge_temperature": 0.5, "protocol": "stepdpo"}


def test_the_command_line_runs_a_verifier_and_says_what_it_did(server, tmp_path):
    rows = rollouts().assign(prompt=[f"{q}\n{PARTIAL}" for q in PROBLEMS.question], pred_answer=None, finish_reason="stop", model="policy",
                             sampling=None, prompt_tokens=1, completion_tokens=1, status="error", votes=None,
                             confidence=1.0, rationale="", localizer_calls=0, localizer_tokens=0)
    write_table(rows, tmp_path / "localized.parquet", "localized")
    write_table(PROBLEMS, tmp_path / "problems.parquet", "problems")
    result = CliRunner().invoke(main, ["rectify", str(tmp_path / "localized.parquet"), "--problems",
                                       str(tmp_path / "problems.parquet"), "--backend", "openai", "--base-url",
                                       server.base_url, "--model", "policy", "--n", "4", "--verify", "rules",
                                       "--verify-action", "drop", "--out", str(tmp_path / "stepdpo.parquet")])
    assert result.exit_code == 0, result.output
    assert "chosen steps checked by rules (drop): 12: 8 accepted, 4 rejected, 0 undecided, 4 dropped" in result.output
    summary = json.loads((tmp_path / "stepdpo.parquet.summary.json").read_text())
    assert summary["stage_stats"]["verify"]["dropped"] == 4 and summary["stage_stats"]["pairs"] == 8


def test_old_attempts_tables_read_and_a_block_travels_without_its_verifier_engine(tmp_path):
    # an attempts table written before the verify columns
    old = pa.schema([f for f in ATTEMPTS if not f.name.startswith("verify_")])
    row = {"unit_id": "u", "problem_id": "p", "stage": "rectify", "outcome": "pairs", "detail": None, "candidates": 2,
           "accepted": 1, "pairs": "[]", "generated_tokens": 5, "unfinished": 0, "error": None}
    table = pa.Table.from_pylist([row], schema=old).replace_schema_metadata(
        {b"stepdata": json.dumps({"kind": "attempts", "schema_version": 2}).encode()})
    pq.write_table(table, tmp_path / "old.attempts.parquet")
    attempts = read_table(tmp_path / "old.attempts.parquet", kind="attempts")
    assert (attempts.verify_calls.tolist(), attempts.verify_checks.tolist()) == ([0], ["[]"])
    # a block whose verifier has its own engine pickles as settings only (the Ray executor ships blocks so)
    config = RectifyConfig(verify="judge", verify_model="judge", verify_base_url="http://127.0.0.1:9/v1")
    block = RectifyStage(EngineConfig(backend="openai", model="policy", base_url="http://127.0.0.1:9/v1"), PROBLEMS,
                         config)
    assert block.verifier.name == "judge"
    copy = pickle.loads(pickle.dumps(block))
    assert copy._verifier is None and not copy._verify_handle.built
    engine = copy.settings()["verify_engine"]
    assert (engine["backend"], engine["model"]) == ("openai", "judge")


@requires_torch
def test_a_prm_verifies_each_chosen_step_after_its_prefix(policy, tmp_path):
    """The prm localizer as the verifier (a tiny random step_tag PRM on transformers): it scores the prefix and
    the chosen step; the threshold decides. At 0 no step is below it (every chosen step accepted); at 1 every
    step is, so the first error is in the prefix (doubted, None), never a verdict on the chosen step."""
    from tiny_models import build_tiny_step_tag_prm

    prm = str(build_tiny_step_tag_prm(tmp_path / "prm"))
    options = {"prm_model": prm, "prm_family": "step_tag"}
    pairs, stats = rectify(policy, tmp_path / "low.parquet", verify="prm", verify_action="drop",
                           verify_options=options | {"threshold": 0.0})
    assert len(pairs) == 12 and pairs.chosen_verified.all() and stats["verify"]["verified_true"] == 12
    assert stats["verify"]["calls"] == 12 and stats["verify"]["tokens"] > 0
    checks = [c for cell in read_table(tmp_path / "low.attempts.parquet", kind="attempts").verify_checks
              for c in json.loads(cell)]
    assert {c["method"] for c in checks} == {"prm"}
    assert all(len(c["evidence"]["step_scores"]) == 2 for c in checks), "prefix step + chosen step scored"
    pairs, stats = rectify(policy, tmp_path / "high.parquet", verify="prm", verify_options=options | {"threshold": 1.0})
    assert len(pairs) == 12 and pairs.chosen_verified.isna().all()
    assert stats["verify"]["none_reasons"]["prefix_doubted"] == 12
