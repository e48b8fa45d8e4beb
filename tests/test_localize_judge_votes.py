"""The judge's vote and its failures: ties go to the earliest step, a judge that cannot be read says so
(in the rows, the summary and the CLI's last line), its sampling settings are options, its cost is complete."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from fake_openai_server import FaultyOpenAIServer

from cli import main
from stepdata import make_problems, read_table, write_table
from stepdata.generation import Completion, GenerationResult
from stepdata.generation.base import Generator
from stepdata.localize.judge import JudgeItem, JudgeLocalizer
from stepdata.localize.judge_protocols import judge_decoding
from stepdata.pipeline.localize import LocalizeConfig, LocalizeStage
from stepdata.settings import SettingError

REPO = Path(__file__).resolve().parents[1]


class ScriptedJudge(Generator):
    """Replies with ``replies`` (one per vote) to every request; counts tokens like a server does:
    per-request usage only, no per-sample counts (as over HTTP with n > 1)."""

    backend = "scripted"

    def __init__(self, replies: list[str], prompt_tokens: int = 100, completion_tokens: int = 40):
        super().__init__("judge")
        self.replies, self.prompt_tokens, self.completion_tokens = replies, prompt_tokens, completion_tokens
        self.sampling = None

    def _generate(self, requests, sampling, progress, stats):
        self.sampling = sampling
        results = []
        for request in requests:
            result = GenerationResult(request.request_id, "prompt", self.prompt_tokens,
                                      [Completion(text, "stop", None) for text in self.replies])
            result.usage_completion_tokens = self.completion_tokens
            results.append(result)
        return results


ITEM = JudgeItem("a", "What is 2 + 2?", ["2 + 2 = 4.\n", "Then 4 * 2 = 8.\n", "So 8 + 1 = 9.\n", "The answer is 9.\n"])


def boxed(*indices: int) -> list[str]:
    return [f"The first error is in \\boxed{{{i}}}" for i in indices]


@pytest.mark.parametrize(
    "votes, expected",
    [
        ([-1, 3], 3),  # a tie between "fine" and step 3 is doubt about step 3
        ([-1, -1, 2, 2], 2),
        ([-1, -1, 2], -1),  # -1 wins with a strict plurality
        ([3, 1], 1),  # tied steps: the earliest
        ([2, 2, 1], 2),
        ([-1], -1),
        ([], None),
    ],
)
def test_majority_vote(votes, expected):
    from stepdata.localize.judge import majority_vote

    assert majority_vote(votes) == expected


@pytest.mark.parametrize("votes, expected", [([-1, 3], 3), ([-1, -1, 2, 2], 2), ([-1, -1, 2], -1), ([3, 1], 1)])
def test_ties_in_the_judges_vote(votes, expected):
    verdict = JudgeLocalizer(ScriptedJudge(boxed(*votes)), votes=len(votes)).localize([ITEM])[0]
    assert verdict.votes == votes and verdict.error_step == expected
    assert verdict.confidence == pytest.approx(votes.count(expected) / len(votes))


def test_judge_cost_counts_prompt_and_completion_tokens_from_the_servers_usage():
    verdict = JudgeLocalizer(ScriptedJudge(boxed(1, 1), prompt_tokens=100, completion_tokens=40),
                             votes=2).localize([ITEM])[0]
    assert verdict.tokens == 140 and verdict.calls == 1


def test_judge_sampling_settings_are_options():
    judge = ScriptedJudge(boxed(1, 1))
    JudgeLocalizer(judge, votes=2, temperature=0.3, top_p=0.5).localize([ITEM])
    assert (judge.sampling.temperature, judge.sampling.top_p) == (0.3, 0.5)
    voting = ScriptedJudge(boxed(1, 1))
    JudgeLocalizer(voting, votes=2).localize([ITEM])
    assert (voting.sampling.temperature, voting.sampling.top_p, voting.sampling.max_tokens) == (1.0, 0.9, 8192)
    single = ScriptedJudge(boxed(1))
    JudgeLocalizer(single, votes=1).localize([ITEM])
    assert single.sampling.greedy and single.sampling.n == 1


@pytest.mark.parametrize(
    "votes, temperature, top_p, expected",
    [
        (1, None, None, (0.0, 1.0)),  # ProcessBench's protocol: one greedy critique
        (8, None, None, (1.0, 0.9)),  # its voting protocol
        (8, 0.6, None, (0.6, 0.9)),  # a value given wins
        (8, None, 0.5, (1.0, 0.5)),
        (1, 0.7, 0.95, (0.7, 0.95)),  # one sampled vote, if asked for
    ],
)
def test_judge_decoding_defaults(votes, temperature, top_p, expected):
    assert judge_decoding(votes, temperature, top_p) == expected
    config = LocalizeConfig(method="judge", votes=votes, judge_temperature=temperature, judge_top_p=top_p)
    options = config.options()
    assert (options["judge_temperature"], options["judge_top_p"]) == expected
    assert (config.recorded()["judge_temperature"], config.recorded()["judge_top_p"]) == expected
    assert "judge_template" not in config.recorded()  # the shipped template: recorded as before


def test_greedy_with_several_votes_is_refused():
    with pytest.raises(ValueError, match="temperature of 0 .greedy. with 3 votes"):
        judge_decoding(3, 0.0)
    with pytest.raises(SettingError, match="greedy") as refused:
        LocalizeConfig(method="judge", votes=3, judge_temperature=0)
    assert refused.value.name == "judge_temperature"
    with pytest.raises(ValueError, match="greedy"):
        JudgeLocalizer(ScriptedJudge(boxed(1)), votes=2, temperature=0)


def rollouts_table(problems: pd.DataFrame) -> pd.DataFrame:
    base = {"prompt": "p", "completion": "c", "pred_answer": "1", "correct": False, "finish_reason": "stop",
            "model": "m", "sampling": None, "prompt_tokens": 1, "completion_tokens": 1, "error": None}
    return pd.DataFrame([
        base | {"problem_id": problems.problem_id[0], "rollout_id": "r0", "steps": ["2 * 3 = 7\n", "done"]},
        base | {"problem_id": problems.problem_id[1], "rollout_id": "r1", "steps": ["We add them.\n", "So 5.", "End."]},
        base | {"problem_id": problems.problem_id[1], "rollout_id": "r2", "steps": ["We add.\n", "So 6."]},
    ])


def test_a_judge_that_cannot_be_read_says_so_in_the_rows_and_the_summary():
    problems = make_problems(2, seed=3)
    replies = ["I think paragraph one is off.", "\\boxed{seven}", "\\boxed{12}"]  # none readable
    stage = LocalizeStage("rules+judge", problems=problems, generator=ScriptedJudge(replies), votes=3)
    out = stage(rollouts_table(problems))
    stats = stage.stats(out)
    rows = out.set_index("rollout_id")
    assert rows.method["r1"] == "judge" and pd.isna(rows.error_step["r1"]) and rows.status["r1"] == "unknown"
    evidence = json.loads(rows.rationale["r1"])
    assert evidence["unreadable"] == 3 and evidence["votes"] == [] and evidence["replies"] == replies
    assert "3 unreadable replies" in evidence["summary"]
    assert stats["judge"] == {"asked": 2, "readable_verdicts": 0, "unreadable_replies": 6, "errors": 0}
    assert stats["localized"] == 1 and stats["unknown"] == 2  # only the rules' find is localized
    assert rows.localizer_tokens["r1"] == 140


def test_localize_cli_reports_an_unreadable_judge(tmp_path):
    problems = make_problems(2, seed=3)
    write_table(problems, tmp_path / "p.parquet", "problems")
    write_table(rollouts_table(problems), tmp_path / "r.parquet", "rollouts")
    env = os.environ | {"OPENAI_API_KEY": "x"}
    with FaultyOpenAIServer(reply_text=lambda key, seed, index: "I cannot decide.") as server:
        done = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), "localize", str(tmp_path / "r.parquet"), "--method", "rules+judge",
             "--backend", "openai", "--model", "judge", "--base-url", server.base_url, "--problems",
             str(tmp_path / "p.parquet"), "--votes", "3", "--judge-temperature", "0.2", "--judge-top-p", "0.9",
             "--out", str(tmp_path / "l.parquet")], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "localized 1 of 3" in last
    assert "judge: 2 asked, 0 readable verdicts, 6 unreadable replies, 0 errors" in last
    summary = json.loads((tmp_path / "l.parquet.summary.json").read_text())
    assert summary["stage_stats"]["judge"]["unreadable_replies"] == 6
    table = read_table(tmp_path / "l.parquet", kind="localized")
    config = table.attrs["stepdata"]["config"]
    assert (config["judge_temperature"], config["judge_top_p"]) == (0.2, 0.9)
    assert set(table.status) == {"error", "unknown"}


class FailingJudge(Generator):
    """Every request fails (retries exhausted, a server that refuses it)."""

    backend = "scripted"

    def _generate(self, requests, sampling, progress, stats):
        return [GenerationResult(r.request_id, None, None, error="HTTP 400: bad request") for r in requests]


def test_judge_errors_are_counted_and_kept_for_retry():
    problems = make_problems(2, seed=3)
    stage = LocalizeStage("judge", problems=problems, generator=FailingJudge("judge"), votes=2)
    out = stage(rollouts_table(problems))
    assert out.error.str.startswith("judge: HTTP 400").all() and (out.status == "unknown").all()
    assert stage.stats(out)["judge"] == {"asked": 3, "readable_verdicts": 0, "unreadable_replies": 0, "errors": 3}


def test_localize_records_a_judge_template_by_path_and_hash_and_notices_a_changed_file(tmp_path):
    problems = make_problems(2, seed=3)
    write_table(problems, tmp_path / "p.parquet", "problems")
    write_table(rollouts_table(problems), tmp_path / "r.parquet", "rollouts")
    template = tmp_path / "judge.txt"
    template.write_text("{{question}}\n{{tagged_steps}}\nThe first wrong paragraph, boxed:\n")
    env = {"OPENAI_API_KEY": "x"}
    runner = CliRunner()
    with FaultyOpenAIServer(reply_text=lambda key, seed, index: "\\boxed{1}") as server:
        args = ["localize", str(tmp_path / "r.parquet"), "--method", "judge", "--backend", "openai", "--model",
                "judge", "--base-url", server.base_url, "--problems", str(tmp_path / "p.parquet"), "--votes", "1",
                "--judge-template", str(template), "--out", str(tmp_path / "l.parquet")]
        done = runner.invoke(main, args, env=env)
        assert done.exit_code == 0, done.output
        config = read_table(tmp_path / "l.parquet", kind="localized").attrs["stepdata"]["config"]
        digest = hashlib.sha256(template.read_bytes()).hexdigest()
        assert config["judge_template"] == {"path": str(template), "sha256": digest}
        assert (config["votes"], config["judge_temperature"], config["judge_max_tokens"]) == (1, 0.0, 8192)
        # the user message the judge got about r0 (two steps): the template, filled in
        sent = next(s["key"] for s in server.served if s["key"].startswith(problems.question[0]))
        assert sent == f"{problems.question[0]}\n<paragraph_0>\n2 * 3 = 7\n</paragraph_0>\n\n<paragraph_1>\ndone\n" \
                       "</paragraph_1>\nThe first wrong paragraph, boxed:"
        template.write_text("{{question}}\n{{tagged_steps}}\nBox the first wrong paragraph's index.\n")
        again = runner.invoke(main, args, env=env)
    assert again.exit_code == 1 and "judge_template.sha256" in again.output, again.output

    bad = tmp_path / "bad.txt"
    bad.write_text("{{question}} {{numbered_steps}}")
    refused = runner.invoke(main, args[:-4] + ["--judge-template", str(bad), "--out", str(tmp_path / "x.parquet")],
                            env=env)
    assert refused.exit_code == 2 and "--judge-template" in refused.output and "numbered_steps" in refused.output
