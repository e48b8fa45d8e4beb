"""Audit views of rollouts and localized tables: kind detection, the solution block, every localizer's evidence,
the report page and `stepdata audit` on them.

The tables are real (embedded problems, hand-written solutions with known mistakes, labelled by the
AnswerPolicy and localized by the real stage: tests/audit_data.py); the judge's, rollouts' and PRM's
evidence is made by their own verdict classes, so a changed rationale format fails here.
"""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest
from audit_data import build_run, localize
from click.testing import CliRunner

from cli import main
from stepdata import read_table, write_table
from stepdata.audit import (
    SolutionsView,
    SolutionView,
    read_evidence,
    render_report,
    show,
    table_kind,
)
from stepdata.audit.solution_html import OUTCOMES, outcome_of, outcomes, solution_block
from stepdata.localize.base import Solution
from stepdata.localize.judge import JudgeVerdict
from stepdata.localize.prm import PRMLocalizer
from stepdata.localize.rollouts import MCVerdict
from stepdata.pipeline.localize import LocalizeStage

MALICIOUS = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = build_run(tmp_path_factory.mktemp("run"))
    return {name: read_table(out / f"{name}.parquet") for name in ("problems", "rollouts", "localized", "pairs")} | {
        "dir": out}


def _articles(page: str) -> list[str]:
    return re.findall(r'<article class="sd-solution".*?</article>', page, flags=re.DOTALL)


def _row(localized: pd.DataFrame, suffix: str) -> dict:
    """The first localized row of the given variant (audit_data: :1 slip, :2 wrong number, :3 cut, :4 no answer)."""
    return localized[localized["rollout_id"].str.endswith(suffix)].iloc[0].to_dict()


def _steps_of(block: str) -> list[tuple[str, str]]:
    """(css classes, step label) of every step item of a block."""
    return re.findall(r'<li class="sd-step([^"]*)" data-step="\d+"><span class="sd-stepno">([^<]*)<', block)


# ---------------------------------------------------------------- kinds


def test_kind_comes_from_the_metadata_else_the_columns(run):
    localized, rollouts = run["localized"], run["rollouts"]
    assert table_kind(localized).source == "metadata" and table_kind(localized).kind == "localized"
    assert table_kind(localized[localized["status"] == "error"]).source == "metadata"  # a slice keeps its attrs
    foreign = pd.read_parquet(run["dir"] / "localized.parquet")  # no stepdata attrs: guessed, and the view says so
    found = table_kind(foreign)
    assert (found.kind, found.source) == ("localized", "columns")
    assert "carries no stepdata metadata" in show(foreign)._repr_html_()
    assert "carries no stepdata metadata" not in show(localized)._repr_html_()
    assert table_kind(pd.read_parquet(run["dir"] / "rollouts.parquet")).kind == "rollouts"
    assert isinstance(show(rollouts), SolutionsView) and show(rollouts).kind == "rollouts"
    assert isinstance(show(localized.iloc[0]), SolutionView) and isinstance(localized.stepdata.show(), SolutionsView)
    # kind= overrides: a localized table shown as plain rollouts has no localization in it
    as_rollouts = show(localized, kind="rollouts")._repr_html_()
    assert "first error at" not in as_rollouts and "sd-step sd-wrong" not in as_rollouts
    with pytest.raises(ValueError, match="cannot audit a problems table"):
        show(run["problems"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['steps'\]"):
        show(rollouts.drop(columns=["steps"]), kind="rollouts")


# ---------------------------------------------------------------- the solution block


def test_first_error_is_highlighted_and_the_steps_after_it_dimmed(run):
    slip = _row(run["localized"], ":1")  # exact: a false claim at step index 1
    assert (slip["status"], slip["error_step"]) == ("error", 1)
    block = solution_block(slip, localized=True)
    steps = _steps_of(block)
    assert len(steps) == len(slip["steps"]) and [label for _, label in steps][:3] == ["Step 1", "Step 2", "Step 3"]
    assert steps[0][0] == "" and steps[1][0] == " sd-wrong" and all(css == " sd-after" for css, _ in steps[2:])
    assert "first error at Step 2" in block and 'data-status="error"' in block and 'data-method="exact"' in block
    claim = read_evidence(slip["rationale"])
    assert (claim.form, claim.step) == ("claim", 1) and claim.claim in slip["steps"][1]
    assert f'<code class="sd-claim">{html.escape(claim.claim)}</code> is false ({html.escape(claim.detail)})' in block

    cut = _row(run["localized"], ":3")  # cut at max_tokens: unfinished, nothing highlighted
    block = solution_block(cut, localized=True)
    assert cut["status"] == "unfinished" and "sd-wrong" not in block and "sd-after" not in block
    assert OUTCOMES["unfinished"] in block and "finish: length" in block and 'data-outcome="unfinished"' in block

    no_answer = _row(run["localized"], ":4")
    block = solution_block(no_answer, localized=True)
    assert no_answer["status"] == "no_error" and "no error found" in block and "sd-wrong" not in block
    assert outcome_of(no_answer) == "no_answer" and "no answer \u2717" in block


def test_a_row_renders_alone_as_in_the_table_and_the_report(run):
    localized, problems = run["localized"], run["problems"]
    table = show(localized, max_rows=None, problems=problems)._repr_html_()
    report = render_report(localized, problems=problems)
    for i in range(len(localized)):
        block = show(localized.iloc[i], problems=problems).block_html()
        assert block.startswith('<article class="sd-solution"') and block in table and block in report
    question = problems.set_index("problem_id").loc[localized.iloc[0]["problem_id"], "question"]
    assert html.escape(question) in _articles(report)[0]  # problems= adds the question and the gold answer


def test_rollouts_page_counts_every_outcome(run):
    rollouts = run["rollouts"]
    page = render_report(rollouts, max_pairs=3)
    unfinished = rollouts["finish_reason"].eq("length")
    expected = {
        OUTCOMES["right"]: int(rollouts["correct"].eq(True).sum()),
        OUTCOMES["wrong"]: int((rollouts["correct"].eq(False) & ~unfinished & rollouts["pred_answer"].notna()).sum()),
        OUTCOMES["no_answer"]: int((rollouts["correct"].eq(False) & ~unfinished & rollouts["pred_answer"].isna()).sum()),
        OUTCOMES["unfinished"]: int(unfinished.sum()),
    }
    assert outcomes(rollouts).tolist() == [outcome_of(r) for r in rollouts.to_dict("records")]  # one rule, two forms
    table = re.search(r'<table class="sd-counts" data-counts="outcome">(.*?)</table>', page).group(1)
    shown = dict(re.findall(r"<tr><td>([^<]*)</td><td class=\"sd-n\">(\d+)</td>", table))
    assert {k: int(v) for k, v in shown.items()} == {k: v for k, v in expected.items() if v}
    assert len(_articles(page)) == 3 and f"Showing the first 3 of {len(rollouts)} solutions" in page
    assert "first error at" not in page and 'data-plot="accuracy_by_problem"' in page and page.count("<svg") == 3


# ---------------------------------------------------------------- every localizer's evidence


def _localized_row(rollout: dict, found) -> dict:
    """A localized row as the stage writes it: the rollout plus the localization's columns."""
    return rollout | LocalizeStage._columns(found)


def test_evidence_of_every_localizer_is_shown(run):
    localized = run["localized"]
    rollout = {k: v for k, v in _row(localized, ":1").items() if k in run["rollouts"].columns}
    n = len(rollout["steps"])

    rules = localize(run["rollouts"], run["problems"], "rules").set_index("rollout_id")
    ev = read_evidence(rules.loc[rollout["rollout_id"], "rationale"])
    assert ev.form == "claim" and ev.step == 1 and ev.summary.startswith("Step 2: '")
    assert read_evidence(_row(localized, ":2")["rationale"]).form == "check"  # exact's "arrives at" note
    assert read_evidence(rules.loc[_row(localized, ":2")["rollout_id"], "rationale"]).form == "text"  # no false claim

    judge = JudgeVerdict(2, votes=[2, 2, -1], unreadable=1, confidence=2 / 3, calls=4, tokens=99,
                         replies=["Step 3 is wrong. \\boxed{2}", f"{MALICIOUS} \\boxed{{2}}", "fine \\boxed{-1}", "?"])
    block = solution_block(_localized_row(rollout, judge.localization()), localized=True)
    assert "votes: Step 3 \u00d72, no error \u00d71; 1 unreadable reply" in block
    assert block.count('<details class="sd-reply">') == 4 and html.escape(MALICIOUS) in block
    assert "<script" not in block and "<img" not in block
    assert [css for css, _ in _steps_of(block)][2] == " sd-wrong" and "confidence 0.67" in block

    mc = MCVerdict(1, mc={0: 0.75, 1: 0.5, 2: 0.0}, probes=3, rollouts=24, tokens=500)
    row = _localized_row(rollout, mc.localization("rollouts-binary"))
    ev = read_evidence(row["rationale"])
    assert ev.form == "mc" and ev.mc == {0: 0.75, 1: 0.5, 2: 0.0}
    block = solution_block(row, localized=True)
    assert "MC 0.50</span>" in block and "MC 0.00</span>" in block and 'class="sd-strip"' in block
    assert re.search(r'data-step="1">.*?MC 0\.00', block, flags=re.DOTALL)  # prefix 2 = after Step 2
    assert block.count("<rect") == 3

    prm = PRMLocalizer("a-prm-folder", threshold=0.5)
    solution = Solution(rollout["rollout_id"], rollout["problem_id"], None, rollout["steps"])
    scores = [0.9, 0.3] + [0.8] * (n - 2)
    row = _localized_row(rollout, prm.verdict(scores, solution, tokens=10))
    ev = read_evidence(row["rationale"])
    assert ev.form == "prm" and ev.step_scores == scores and ev.threshold == 0.5
    block = solution_block(row, localized=True)
    assert block.count("<rect") == n and 'stroke-dasharray="3 2"' in block  # a bar per step, the threshold line
    assert '<span class="sd-badge sd-low" title="P(step is good) from the PRM">score 0.30</span>' in block
    assert [css for css, _ in _steps_of(block)][1] == " sd-wrong"

    # a note of unknown form (a person's, a plugin's) is shown as written; broken JSON is text, never an error
    for rationale in ("I think step 3 is off", "{not json", None):
        ev = read_evidence(rationale)
        assert ev.form == ("none" if rationale is None else "text") and ev.summary == (rationale or "")


def test_model_text_in_a_solution_is_escaped(run):
    evil = run["rollouts"].iloc[[1]].copy()
    evil["steps"] = [[f" {MALICIOUS}\n", "Step 2: 2 + 2 = 5.\n"]]
    evil["completion"] = "".join(evil["steps"].iloc[0])
    evil["rollout_id"] = 'evil"><script>x</script>'
    localized = localize(evil, run["problems"], "rules")
    page = render_report(localized, kind="localized")
    assert page.count("<script") == 1 and "<img" not in page and html.escape(MALICIOUS) in page
    assert 'data-rollout-id="evil&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in page


# ---------------------------------------------------------------- the CLI


def test_cli_audit_of_localized_and_rollouts_tables(run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "localized.html"
    done = runner.invoke(main, ["audit", str(run["dir"] / "localized.parquet"), "--out", str(out), "--max-rows", "3"])
    assert done.exit_code == 0, done.output
    assert f"wrote the audit of {len(run['localized'])} localized rows (3 rendered;" in done.output
    page = out.read_text(encoding="utf-8")
    assert len(_articles(page)) == 3 and "<title>Localized audit: localized.parquet</title>" in page
    first = run["localized"].iloc[0]
    question = run["problems"].set_index("problem_id").loc[first["problem_id"], "question"]
    assert html.escape(question) in page  # the problems the table records were found and shown
    assert 'select data-filter="method"' in page and 'data-filter="status"' in page

    done = runner.invoke(main, ["audit", str(run["dir"] / "rollouts.parquet"), "--out", str(out)])
    assert done.exit_code == 0 and f"{len(run['rollouts'])} rollouts rows" in done.output
    assert len(_articles(out.read_text(encoding="utf-8"))) == len(run["rollouts"])

    moved = tmp_path / "moved.parquet"  # recorded problems that are gone: said, and the page is still written
    lineage = {"lineage": {"problems": str(tmp_path / "gone.parquet")}}
    write_table(run["localized"], moved, "localized", config=lineage)
    done = runner.invoke(main, ["audit", str(moved), "--out", str(out)])
    assert done.exit_code == 0 and "questions not shown" in done.output and "give --problems" in done.output
    bad = runner.invoke(main, ["audit", str(moved), "--out", str(out), "--problems", str(tmp_path / "nope.parquet")])
    assert bad.exit_code != 0 and "--problems" in bad.output


def test_a_recipe_audits_a_localized_step(run, tmp_path):
    recipe = tmp_path / "audit.yaml"
    recipe.write_text(f"""out: {tmp_path / "out"}
steps:
  - {{do: localize, input: "{run["dir"] / "rollouts.parquet"}", out: localized.parquet, config: {{method: rules}}}}
  - {{do: audit, input: "@localize", out: localized.html}}
""")
    done = CliRunner().invoke(main, ["run", str(recipe)])
    assert done.exit_code == 0, done.output
    page = (tmp_path / "out" / "localized.html").read_text(encoding="utf-8")
    wrong = int(run["rollouts"]["correct"].eq(False).sum())
    assert "<title>stepdata localized audit</title>" in page and len(_articles(page)) == wrong
    assert 'data-method="rules"' in page
