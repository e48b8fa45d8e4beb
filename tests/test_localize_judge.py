"""The judge localizer: robust parsing (the final box, the last decision line), majority vote, templates of
your own (rendered with the protocol's variables, or refused), and runs over a real socket."""

import pandas as pd
import pytest
from fake_openai_server import FaultyOpenAIServer

from stepdata import make_problems
from stepdata.generation.openai_backend import OpenAIGenerator
from stepdata.localize.judge import (
    JudgeItem,
    JudgeLocalizer,
    parse_boxed_index,
    parse_decision_line,
)
from stepdata.localize.judge_protocols import PROTOCOLS, judge_template
from stepdata.pipeline.localize import LocalizeConfig, LocalizeStage
from stepdata.settings import SettingError


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Paragraph 1 adds wrongly. \\boxed{1}", 1),
        ("all fine \\boxed{-1}", -1),
        ("first \\boxed{0} then I changed my mind: \\boxed{2}", 2),
        ("paragraph \\boxed{1} looks wrong... no, all fine: \\boxed{none}", None),  # only the final box counts
        ("\\boxed{2} and finally \\boxed{1", None),  # the final box is cut: an earlier one is not used
        ("no box here, the error is in paragraph 1", None),
        ("\\boxed{7}", None),  # out of range
        ("\\boxed{one}", None),
        ("\\boxed{1", None),  # unbalanced
        ("", None),
    ],
)
def test_boxed_index_parsing(reply, expected):
    assert parse_boxed_index(reply, 3) == expected


ANALYSIS = ("Step 1 computes 2 + 2 = 4, which is right. Step 2 claims 4 * 2 = 9: that is wrong, but let me "
            "check step 2 again. Step 3 only restates it.\n")


@pytest.mark.parametrize(
    "reply, expected",
    [
        (ANALYSIS + "Decision: step 2", 1),  # stray "step 2"/"Step 3" mentions before it are not read
        (ANALYSIS + "Decision: none", -1),
        (ANALYSIS + "**Decision:** Step 3.", 2),
        (ANALYSIS + "## Decision: step 1\n", 0),
        ("Decision: step 1\nOn reflection the first step is fine.\nDecision: none", -1),  # the last decision line
        (ANALYSIS, None),  # no decision line: unreadable, never guessed from the analysis
        (ANALYSIS + "Decision: step 2 or step 3", None),  # not the fixed form
        (ANALYSIS + "Decision: step 4", None),  # out of range (3 steps)
        (ANALYSIS + "Decision: step 0", None),  # steps are numbered from 1
        ("Decision: step 2\nDecision: maybe", None),  # the last decision line is unreadable: no fallback
        ("", None),
    ],
)
def test_decision_line_parsing(reply, expected):
    assert parse_decision_line(reply, 3) == expected


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


STEPS = ["2 + 2 = 4.\n", "4 * 2 = 9.\n", "The answer is 9.\n"]


def test_judge_templates_are_rendered_with_the_protocols_variables(tmp_path):
    tagged = "<paragraph_0>\n2 + 2 = 4.\n</paragraph_0>\n\n<paragraph_1>\n4 * 2 = 9.\n</paragraph_1>\n\n" \
             "<paragraph_2>\nThe answer is 9.\n</paragraph_2>"
    processbench = PROTOCOLS["processbench"].values("What is 2 + 2, doubled?", STEPS, None)
    assert processbench == {"question": "What is 2 + 2, doubled?", "tagged_steps": tagged}
    stepdpo = PROTOCOLS["stepdpo"].values("Q", STEPS, None)
    assert stepdpo["numbered_steps"] == "Step 1: 2 + 2 = 4.\nStep 2: 4 * 2 = 9.\nStep 3: The answer is 9."
    assert stepdpo["reference"] == "(none given)"
    shipped = judge_template("stepdpo").render(**stepdpo)[0]["content"]
    assert shipped.rstrip().endswith(stepdpo["numbered_steps"]) and "Decision: none" in shipped

    plain = tmp_path / "critique.txt"  # no [role] header: the whole file is the user message
    plain.write_text("Problem: {{question}}\n\n{{tagged_steps}}\n\nFirst wrong paragraph in \\boxed{}, else -1.\n")
    rendered = judge_template("processbench", plain).render(**processbench)
    assert rendered == [{"role": "user", "content": f"Problem: What is 2 + 2, doubled?\n\n{tagged}\n\n"
                                                    "First wrong paragraph in \\boxed{}, else -1."}]
    sectioned = tmp_path / "mine.txt"
    sectioned.write_text("[system]\nYou grade proofs.\n[user]\n{{question}}\nRef: {{reference}}\n{{numbered_steps}}\n")
    assert [m["role"] for m in judge_template("stepdpo", sectioned).render(**stepdpo)] == ["system", "user"]


@pytest.mark.parametrize(
    "protocol, text, message",
    [
        ("processbench", "{{question}} {{tagged_steps}} {{answer}}", r"unknown variable\(s\) \['answer'\]; the "
                                                                     r"processbench protocol gives"),
        ("processbench", "{{question}} {{numbered_steps}}", r"unknown variable\(s\) \['numbered_steps'\]"),
        ("stepdpo", "{{question}} {{tagged_steps}}", r"unknown variable\(s\) \['tagged_steps'\]"),
        ("stepdpo", "Judge this: {{question}}", r"must show the question and the steps .*uses \['question'\]"),
        ("processbench", "[Math Problem]\n{problem}\n{tagged_response}\n\\boxed{{}}",
         r"no variables; it looks like a str.format template"),
        ("processbench", "[user]\n{{question}} {{tagged_steps}}\n[assistant]\nThe first error is", r"\[assistant\]"),
        ("processbench", "", r"must show the question"),
    ],
)
def test_a_bad_judge_template_is_refused_naming_the_file(tmp_path, protocol, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as refused:
        judge_template(protocol, path)
    assert str(path) in str(refused.value)
    with pytest.raises(SettingError, match=message):
        LocalizeConfig(method="judge", protocol=protocol, judge_template=str(path))


def test_a_missing_judge_template_is_refused():
    with pytest.raises(SettingError, match="judge template /no/such.txt: no such file"):
        LocalizeConfig(method="judge", judge_template="/no/such.txt")


def test_the_judge_sends_a_template_of_your_own_and_reads_the_final_decision(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    template = tmp_path / "mine.txt"
    template.write_text("[user]\nCheck: {{question}}\nKnown answer: {{reference}}\n{{numbered_steps}}\n"
                        "End with Decision: step k or Decision: none.\n")
    sent = []

    def reply(body, index):
        sent.append(body)
        return "Step 1 is fine; step 3 repeats step 2.\nStep 2 is wrong: 4 * 2 = 8.\nDecision: step 2"

    with FaultyOpenAIServer(reply_body=reply) as server:
        judge = JudgeLocalizer(OpenAIGenerator("judge", base_url=server.base_url), protocol="stepdpo", votes=1,
                               template=str(template))
        verdict = judge.localize([JudgeItem("a", "What is 2 + 2, doubled?", STEPS, "2 + 2 = 4; 4 * 2 = 8.")])[0]
    assert sent[0]["messages"] == [{"role": "user", "content": (
        "Check: What is 2 + 2, doubled?\nKnown answer: 2 + 2 = 4; 4 * 2 = 8.\nStep 1: 2 + 2 = 4.\n"
        "Step 2: 4 * 2 = 9.\nStep 3: The answer is 9.\nEnd with Decision: step k or Decision: none.")}]
    assert (sent[0]["temperature"], sent[0]["n"]) == (0.0, 1)  # one vote: greedy
    assert verdict.error_step == 1 and verdict.votes == [1] and verdict.unreadable == 0
    assert verdict.replies[0].startswith("Step 1 is fine"), "the reasoning is kept in the stored reply"
