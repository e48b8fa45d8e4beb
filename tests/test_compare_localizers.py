"""Comparing localizers: agreement, precision and recall against a reference, unmatched solutions, the page
(filtered in a real browser) and `stepdata compare-localizers`.

exact and rules run on hand-written solutions with known mistakes (tests/audit_data.py): an arithmetic slip
(both see it, on the same step), a true equation on a wrong number (only exact sees it; rules answer
unknown), a cut solution (both unfinished), one without an answer (exact: no error; rules: unknown). The
expected numbers are counted here from the tables themselves, by a plain loop, not by the code under test.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from audit_data import build_run, localize
from click.testing import CliRunner
from test_audit import _browser, _chromium

from cli import main
from stepdata import read_table, write_table
from stepdata.audit import compare_localizers


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = build_run(tmp_path_factory.mktemp("run"))
    rollouts, problems = read_table(out / "rollouts.parquet"), read_table(out / "problems.parquet")
    rules = localize(rollouts, problems, "rules")
    write_table(rules, out / "rules.parquet", "localized", config={"stage": "localize", "method": "rules"})
    return {"dir": out, "exact": read_table(out / "localized.parquet"), "rules": read_table(out / "rules.parquet"),
            "problems": problems}


def _verdict(row: dict) -> int | None:
    return row["error_step"] if row["status"] == "error" else (-1 if row["status"] == "no_error" else None)


def _label(row: dict) -> str:
    if row["status"] == "error":
        return f"Step {int(row['error_step']) + 1}"
    return "no error" if row["status"] == "no_error" else row["status"]


def test_agreement_and_scores_against_the_reference(tables):
    exact, rules = tables["exact"], tables["rules"]
    cmp = compare_localizers([exact, rules], reference="exact")  # named by the method each run recorded
    assert cmp.names == ["exact", "rules"] and len(cmp.codes) == len(exact) and cmp.unmatched.empty

    a = {r["rollout_id"]: _verdict(r) for r in exact.to_dict("records")}
    b = {r["rollout_id"]: _verdict(r) for r in rules.to_dict("records")}
    both = [i for i in a if a[i] is not None and b[i] is not None]
    row = cmp.agreement.iloc[0]
    assert row["both_decided"] == len(both) > 0
    assert row["same_step"] == sum(a[i] == b[i] for i in both)
    assert row["same_detection"] == sum((a[i] >= 0) == (b[i] >= 0) for i in both)
    assert cmp.matrix("step").loc["rules", "exact"] == pytest.approx(row["same_step"] / len(both))

    ref_errors = [i for i in a if a[i] is not None and a[i] >= 0]
    predicted = [i for i in a if a[i] is not None and b[i] is not None and b[i] >= 0]
    hits = [i for i in ref_errors if b[i] == a[i]]
    score = cmp.scores.set_index("localizer").loc["rules"]
    assert (score["reference_errors"], score["predicted_errors"], score["hits"]) == (
        len(ref_errors), len(predicted), len(hits))
    assert score["step_precision"] == pytest.approx(len(hits) / len(predicted))
    assert score["step_recall"] == pytest.approx(len(hits) / len(ref_errors))
    # what the construction says: rules see every slip on exact's step, and none of the wrong numbers
    slips = [i for i in ref_errors if i.endswith(":1")]
    assert score["step_precision"] == 1.0 and set(hits) == set(slips) and score["step_recall"] < 1
    assert score["undecided"] == sum(b[i] is None for i in a if a[i] is not None)

    la = {r["rollout_id"]: _label(r) for r in exact.to_dict("records")}
    lb = {r["rollout_id"]: _label(r) for r in rules.to_dict("records")}
    dis = cmp.disagreements.set_index("rollout_id")
    assert set(dis.index) == {i for i in la if la[i] != lb[i]} and len(dis) > 0
    wrong_number = next(i for i in dis.index if i.endswith(":2"))
    assert (dis.at[wrong_number, "exact"], dis.at[wrong_number, "rules"]) == (la[wrong_number], "unknown")
    assert dis.at[wrong_number, "disagreement"] == "undecided" and dis.at[wrong_number, "departs"] == ["rules"]


def test_unmatched_solutions_are_listed_never_dropped(tables):
    exact, rules = tables["exact"], tables["rules"].copy()
    gone, changed = rules["rollout_id"].iloc[0], rules["rollout_id"].iloc[1]
    rules = rules.iloc[1:].copy()
    rules.loc[rules["rollout_id"] == changed, "steps"] = pd.Series([["another text\n"]],
                                                                   index=rules.index[rules["rollout_id"] == changed])
    cmp = compare_localizers({"exact": exact, "rules": rules})
    assert len(cmp.codes) == len(exact) - 2 and gone not in cmp.codes.index and changed not in cmp.codes.index
    listed = cmp.unmatched.set_index("rollout_id")
    assert listed.at[gone, "missing_from"] == ["rules"] and listed.at[gone, "reason"] == "missing"
    assert "steps differ" in listed.at[changed, "reason"]
    page = cmp.report()
    assert 'data-unmatched="2"' in page and gone in page

    with pytest.raises(ValueError, match=r"table 'rules': rollout_id .* is in rows \[0, 1\]"):
        compare_localizers({"exact": exact, "rules": pd.concat([tables["rules"].iloc[[0]]] * 2, ignore_index=True)})
    with pytest.raises(ValueError, match="is a rollouts table"):
        compare_localizers({"exact": exact, "r": read_table(tables["dir"] / "rollouts.parquet")})
    with pytest.raises(ValueError, match="reference 'judge' is not one of"):
        compare_localizers([exact, tables["rules"]], reference="judge")
    with pytest.raises(ValueError, match="at least two"):
        compare_localizers([exact])
    same = compare_localizers([exact, exact])  # a name taken twice is numbered
    assert same.names == ["exact", "exact (2)"] and same.disagreements.empty


def test_cli_page_json_and_in_page_filter(tables, tmp_path):
    out, numbers = tmp_path / "compare.html", tmp_path / "compare.json"
    rules = str(tables["dir"] / "rules.parquet")
    done = CliRunner().invoke(main, ["compare-localizers", rules, "--reference", str(tables["dir"] / "localized.parquet"),
                                     "--out", str(out), "--json", str(numbers)])
    assert done.exit_code == 0, done.output
    cmp = compare_localizers([tables["rules"], tables["exact"]], reference="exact")
    data = json.loads(numbers.read_text())
    assert data["localizers"] == ["rules", "exact"] and data["reference"] == "exact"
    assert data["matched"] == len(cmp.codes) and data["scores"][0]["hits"] == int(cmp.scores["hits"].iloc[0])
    assert data["agreement"][0]["both_decided"] == int(cmp.agreement["both_decided"].iloc[0])
    assert "against exact: rules step precision 100.0%" in done.output

    page = out.read_text(encoding="utf-8")
    articles = re.findall(r'<article class="sd-solution"[^>]*>', page)
    disagree = [a for a in articles if 'data-agreement="disagree"' in a]
    assert len(articles) == len(cmp.codes) and len(disagree) == len(cmp.disagreements) > 0
    assert page.count("<svg") == 3 and 'data-matrix="step"' in page and 'data-counts="scores"' in page
    assert '<option value="disagree" selected>' in page and page.count("<script") == 1

    bad = CliRunner().invoke(main, ["compare-localizers", rules, str(tables["dir"] / "rollouts.parquet"),
                                    "--out", str(out)])
    assert bad.exit_code != 0 and "expected a localized table, found a rollouts table" in bad.output

    # the filter runs in the page itself: it opens on the disagreements, with no network
    chromium = _chromium()
    dom = _browser(chromium, tmp_path / "profile", "--dump-dom", out.resolve().as_uri())
    assert 'data-audit-script="ready"' in dom
    shown = re.findall(r'<article class="sd-solution"[^>]*>', dom)
    hidden = [a for a in shown if " hidden" in a]
    assert len(shown) == len(articles) and len(hidden) == len(articles) - len(disagree)
    assert all('data-agreement="agree"' in a for a in hidden)
    assert f"{len(disagree)} of {len(articles)} solutions on this page match" in dom
