"""The comparison of localizers as HTML: the page (``stepdata compare-localizers``) and the notebook view.

Numbers first (agreement matrices, precision and recall against the reference,
the solutions that could not be matched), then three plots (first-error position
per localizer, accuracy by problem, confidence against agreement), then the
solutions to read: each with its steps, every localizer's mark on the step it
blames, and every localizer's verdict and evidence side by side. The page opens
filtered to the disagreements; its filter (agreement, kind of disagreement, the
localizer that departs, text) runs in the page, with no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stepdata.audit import theme
from stepdata.audit.compare import Comparison
from stepdata.audit.evidence import read_evidence
from stepdata.audit.fields import as_float
from stepdata.audit.page import (
    figures,
    filter_bar,
    html_page,
    left_out_note,
    made_by,
    slug,
    stat,
)
from stepdata.audit.pair_html import esc
from stepdata.audit.solution_html import (
    OUTCOMES,
    evidence_html,
    outcome_of,
    solution_anchor,
    steps_html,
)
from stepdata.audit.solutions import (
    ACCURACY_BINS,
    CONFIDENCE_BINS,
    accuracy_bin,
    confidence_bin,
)
from stepdata.audit.solutions_report import problems_index
from stepdata.audit.svg import bar_chart
from stepdata.steps import step_label

NOUN = "solutions"
DEFAULT_VIEW_SOLUTIONS = 20


def _colour(i: int) -> str:
    return theme.PALETTE[i % len(theme.PALETTE)]


def _share(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.1f}%"


def summary_html(cmp: Comparison) -> str:
    """The comparison's numbers: localizers, matched and unmatched solutions, full agreement, the reference."""
    verdicts = cmp.verdicts
    agree = int(verdicts["all_agree"].sum())
    stats = "".join([
        stat("localizers", str(len(cmp.names)), "localizers"),
        stat("matched", str(len(cmp.codes)), "solutions in every table"),
        stat("all_agree", _share(agree / len(verdicts)) if len(verdicts) else "n/a",
             f"all agree ({agree} of {len(verdicts)})"),
        stat("unmatched", str(len(cmp.unmatched)), "solutions left out (not matched)"),
        stat("reference", cmp.reference or "none", "reference"),
    ])
    sources = "".join(f"<tr><td>{esc(n)}</td><td>{esc(cmp.sources.get(n, ''))}</td></tr>" for n in cmp.names)
    return (f'<div class="sd-stats">{stats}</div>'
            f'<table class="sd-counts" data-counts="tables"><tr><th>localizer</th><th>table</th></tr>{sources}</table>'
            f"{unmatched_html(cmp)}")


def unmatched_html(cmp: Comparison) -> str:
    """The solutions that are not in every table (or whose steps differ), listed: never dropped silently."""
    if not len(cmp.unmatched):
        return ""
    rows = "".join(f"<tr><td>{esc(r.rollout_id)}</td><td>{esc(r.problem_id)}</td><td>{esc(', '.join(r.present_in))}"
                   f"</td><td>{esc(r.reason if r.reason != 'missing' else 'missing from ' + ', '.join(r.missing_from))}"
                   "</td></tr>" for r in cmp.unmatched.itertuples())
    return (f'<p class="sd-note" data-unmatched="{len(cmp.unmatched)}">{len(cmp.unmatched)} solutions are not compared: '
            "they are missing from some tables, or their steps differ between tables (listed below).</p>"
            f'<details><summary>Solutions not compared ({len(cmp.unmatched)})</summary><table class="sd-counts" '
            f'data-counts="unmatched"><tr><th>rollout_id</th><th>problem</th><th>in</th><th>why</th></tr>{rows}'
            "</table></details>")


def _matrix_html(cmp: Comparison, measure: str, caption: str) -> str:
    square = cmp.matrix(measure)
    counts = {(r.a, r.b): r for r in cmp.agreement.itertuples()}
    head = "".join(f"<th>{esc(n)}</th>" for n in cmp.names)
    body = []
    for a in cmp.names:
        cells = []
        for b in cmp.names:
            pair = counts.get((a, b)) or counts.get((b, a))
            if pair is None:
                cells.append('<td class="sd-n sd-muted">\u2014</td>')
                continue
            same, n = ((pair.same_step, pair.both_decided) if measure == "step" else
                       (pair.same_detection, pair.both_decided) if measure == "detection" else
                       (pair.same_status, pair.solutions))
            cells.append(f'<td class="sd-n" title="{same} of {n}">{_share(square.at[a, b])}</td>')
        body.append(f"<tr><th>{esc(a)}</th>{''.join(cells)}</tr>")
    return (f'<table class="sd-counts sd-matrix" data-matrix="{esc(measure)}"><tr><th>{esc(caption)}</th>{head}</tr>'
            f"{''.join(body)}</table>")


def agreement_html(cmp: Comparison) -> str:
    """The two agreement matrices (same step; error vs no error), over the solutions both localizers decided."""
    return (_matrix_html(cmp, "step", "same first-error step") +
            _matrix_html(cmp, "detection", "agree on error vs no error") +
            '<p class="sd-muted">Shares are over the solutions both localizers decided (hover a cell for the counts); '
            "unknown and unfinished answers are left out of them.</p>")


SCORE_COLUMNS = (("compared", "compared"), ("reference_errors", "reference errors"), ("hits", "same step"),
                 ("step_precision", "step precision"), ("step_recall", "step recall"), ("step_f1", "step F1"),
                 ("detect_precision", "error precision"), ("detect_recall", "error recall"), ("accuracy", "accuracy"),
                 ("early", "too early"), ("late", "too late"), ("missed", "missed"),
                 ("false_alarms", "false alarms"), ("undecided", "undecided"))


def scores_html(cmp: Comparison) -> str:
    """Precision and recall of each localizer against the reference (nothing without a reference)."""
    if cmp.reference is None:
        return ('<p class="sd-muted">No reference chosen: precision and recall need one (--reference; exact on '
                "embedded problems, people's labels elsewhere).</p>")
    scores = cmp.scores
    head = "".join(f"<th>{esc(label)}</th>" for _, label in SCORE_COLUMNS)
    rows = []
    for rec in scores.to_dict("records"):
        cells = "".join(f'<td class="sd-n">{_share(rec[k]) if isinstance(rec[k], float) else esc(rec[k])}</td>'
                        for k, _ in SCORE_COLUMNS)
        rows.append(f'<tr data-localizer="{esc(rec["localizer"])}"><th>{esc(rec["localizer"])}</th>{cells}</tr>')
    left_out = int(scores["left_out"].iloc[0]) if len(scores) else 0
    note = (f" {left_out} solutions the reference did not decide are left out." if left_out else "")
    return (f'<table class="sd-counts" data-counts="scores"><tr><th>against {esc(cmp.reference)}</th>{head}</tr>'
            f"{''.join(rows)}</table>"
            f'<p class="sd-muted">Step precision: of the errors a localizer located, the share on the reference\'s '
            "step; step recall: of the reference's errors, the share located on the same step; error precision and "
            f"recall: the same for error vs no error, whatever the step.{esc(note)}</p>")


def _first_error_plot(cmp: Comparison) -> str:
    codes = cmp.codes
    steps = sorted({int(c) for n in cmp.names for c in codes[n].dropna() if int(c) >= 0})
    top = steps[-1] if steps else -1
    labels = [step_label(i) for i in range(top + 1)] + ["no error", "undecided"]
    series = []
    for i, name in enumerate(cmp.names):
        column = codes[name]
        counts = [int((column == s).sum()) for s in range(top + 1)]
        counts += [int((column == -1).sum()), int(column.isna().sum())]
        series.append((name, _colour(i), counts))
    return bar_chart("First-error position by localizer", labels, series, "first wrong step (shown from 1)", NOUN)


def _accuracy_plot(cmp: Comparison) -> str:
    if cmp.reference is None:
        agree = cmp.verdicts.groupby("problem_id")["all_agree"].mean()
        counts = [sum(accuracy_bin(float(v)) == b for v in agree) for b in ACCURACY_BINS]
        return bar_chart("Agreement by problem", list(ACCURACY_BINS), [("problems", theme.NEUTRAL, counts)],
                         "share of a problem's solutions on which all agree", "problems")
    series = []
    for i, name in enumerate(cmp.names):
        if name == cmp.reference:
            continue
        hits = cmp.agrees_with_reference(name)
        by_problem = hits.groupby(cmp.problem_ids[hits.index]).mean()
        series.append((name, _colour(i), [sum(accuracy_bin(float(v)) == b for v in by_problem) for b in ACCURACY_BINS]))
    return bar_chart(f"Accuracy by problem (against {cmp.reference})", list(ACCURACY_BINS), series,
                     "share of a problem's solutions with the reference's verdict", "problems")


def _confidence_plot(cmp: Comparison) -> str:
    labels = list(CONFIDENCE_BINS) + ["none"]
    series, tips = [], []
    for i, name in enumerate(cmp.names):
        if name == cmp.reference:
            continue
        if cmp.reference is not None:
            agrees = cmp.agrees_with_reference(name)
        else:  # without a reference: the share on which every other localizer says the same
            verdicts = cmp.verdicts.set_index("rollout_id")
            agrees = verdicts["all_agree"]
        conf = cmp.confidence.loc[agrees.index, name]
        bins = [confidence_bin(c) if not pd.isna(c) else "none" for c in conf]
        shares, notes = [], []
        for label in labels:
            picked = [bool(a) for a, b in zip(agrees, bins) if b == label]
            k, n = sum(picked), len(picked)
            shares.append(round(100 * k / n) if n else 0)
            notes.append(f"{k} of {n} agree" if n else "no solutions")
        series.append((name, _colour(i), shares))
        tips.append(notes)
    what = f"% with {cmp.reference}'s verdict" if cmp.reference else "% on which all agree"
    return bar_chart("Confidence against agreement", labels, series, "the localizer's confidence", what,
                     tooltips=tips)


def plots_html(cmp: Comparison) -> str:
    """First-error position per localizer, accuracy (or agreement) by problem, confidence against agreement."""
    return figures([("first_error", _first_error_plot(cmp)), ("accuracy_by_problem", _accuracy_plot(cmp)),
                    ("confidence", _confidence_plot(cmp))])


def comparison_block(cmp: Comparison, rollout_id: str, problem: Mapping[str, Any] | None = None) -> str:
    """One solution: its steps with each localizer's mark, and every localizer's verdict and evidence."""
    first = cmp.rows[cmp.names[0]].loc[rollout_id].to_dict()
    kind = cmp.disagreement_kind(rollout_id)
    departs = cmp.departs(rollout_id)
    marks: dict[int, list[str]] = {}
    for name in cmp.names:
        code = cmp.codes.at[rollout_id, name]
        if not pd.isna(code) and int(code) >= 0:
            marks.setdefault(int(code), []).append(name)
    anchor_code = cmp.codes.at[rollout_id, cmp.reference] if cmp.reference else (
        cmp.codes.at[rollout_id, cmp.names[0]] if kind is None else pd.NA)
    wrong = int(anchor_code) if not pd.isna(anchor_code) and int(anchor_code) >= 0 else None
    verdict_rows = []
    for name in cmp.names:
        row = cmp.rows[name].loc[rollout_id].to_dict()
        conf = as_float(row.get("confidence"))
        role = " (reference)" if name == cmp.reference else ""
        css = ' class="sd-departs"' if name in departs else ""
        verdict_rows.append(
            f'<tr{css} data-localizer="{esc(name)}"><th>{esc(name)}{role}</th>'
            f"<td>{esc(cmp.label(name, rollout_id))}</td>"
            f'<td class="sd-n">{"" if conf is None else f"{conf:.2f}"}</td>'
            f"<td>{evidence_html(read_evidence(row.get('rationale')))}</td></tr>")
    outcome = outcome_of(first)
    if kind is None:
        tag = f'<span class="sd-tag sd-ok">all agree: {esc(cmp.label(cmp.names[0], rollout_id))}</span>'
    else:
        tag = f'<span class="sd-tag sd-bad">disagree ({esc(kind)})</span>'
    who = (f'<span class="sd-tag">departs from {esc(cmp.reference or "the majority")}: {esc(", ".join(departs))}</span>'
           if departs else "")
    question = ""
    if problem is not None:
        question = (f'<div class="sd-label">Question <span class="sd-muted">(gold answer: '
                    f'{esc(problem.get("answer"))})</span></div><pre class="sd-text">{esc(problem.get("question"))}</pre>')
    attrs = {"rollout-id": rollout_id, "problem": str(first.get("problem_id")),
             "agreement": "agree" if kind is None else "disagree", "disagreement": slug(kind or "none"),
             "departs": " ".join(slug(n) for n in departs), "outcome": outcome}
    data = " ".join(f'data-{k}="{esc(v)}"' for k, v in attrs.items())
    return (
        f'<article class="sd-solution" id="{solution_anchor(rollout_id)}" {data}>'
        f'<div class="sd-head">{tag}{who}<span class="sd-tag">{esc(OUTCOMES[outcome])}</span>'
        f'<span class="sd-tag">problem {esc(first.get("problem_id"))}</span>'
        f'<span class="sd-id" title="rollout_id">{esc(rollout_id)}</span></div>'
        f"{question}"
        f"{steps_html([str(s) for s in (first.get('steps') or [])], wrong, marks=marks)}"
        f'<table class="sd-counts sd-verdicts"><tr><th>localizer</th><th>verdict</th><th>confidence</th>'
        f"<th>evidence</th></tr>{''.join(verdict_rows)}</table>"
        "</article>"
    )


def _ordered(cmp: Comparison) -> list[str]:
    """Disagreements first (so a cap keeps them), each group in table order."""
    kinds = {rid: cmp.disagreement_kind(rid) for rid in cmp.codes.index}
    return [r for r in cmp.codes.index if kinds[r] is not None] + [r for r in cmp.codes.index if kinds[r] is None]


def _filter_html(cmp: Comparison) -> str:
    kinds = sorted({k for k in (cmp.disagreement_kind(r) for r in cmp.codes.index) if k})
    return filter_bar("article.sd-solution", NOUN, [
        ("agreement", "agree or not", [("disagree", "localizers disagree"), ("agree", "all agree")]),
        ("disagreement", "any disagreement", [(slug(k), k) for k in kinds]),
        ("departs", "any localizer", [(slug(n), f"{n} departs") for n in cmp.names if n != cmp.reference]),
    ], placeholder="filter: text, rollout_id, claim...", tokens=("departs",), selected={"agreement": "disagree"})


def render_comparison(cmp: Comparison, title: str = "stepdata localizer comparison", max_solutions: int | None = None,
                      problems: pd.DataFrame | None = None) -> str:
    """The comparison page (see the module doc); ``max_solutions`` caps the solutions rendered (disagreements first)."""
    if max_solutions is not None and max_solutions < 0:
        raise ValueError(f"max_solutions must be >= 0 or None, got {max_solutions}")
    order = _ordered(cmp)
    shown = order if max_solutions is None else order[:max_solutions]
    index = problems_index(problems)
    blocks = "\n".join(comparison_block(cmp, rid, index.get(str(cmp.problem_ids[rid]))) for rid in shown)
    note = left_out_note(len(shown), len(order), f"max_solutions={max_solutions}", NOUN)
    return html_page(title, (
        f'<p class="sd-muted">{len(cmp.names)} localizers on {len(cmp.codes)} solutions matched by rollout_id. '
        f"Steps are numbered from 1 here. The list opens showing the disagreements (choose \u201cagree or not\u201d to "
        f"see all). {made_by()}</p>"
        f"<h2>Summary</h2>{summary_html(cmp)}"
        f"<h2>Agreement</h2>{agreement_html(cmp)}"
        f"<h2>Against the reference</h2>{scores_html(cmp)}"
        f"{plots_html(cmp)}"
        f"<h2>Solutions</h2>{note}{_filter_html(cmp)}\n{blocks}\n{note}"
    ))


def comparison_view_html(cmp: Comparison, max_solutions: int = DEFAULT_VIEW_SOLUTIONS) -> str:
    """The notebook view: the page's numbers and plots, and the first disagreements (no script in a notebook)."""
    disagreeing = [r for r in _ordered(cmp) if cmp.disagreement_kind(r) is not None]
    shown = disagreeing[:max_solutions]
    note = left_out_note(len(shown), len(disagreeing), "the notebook view shows the first "
                         f"{max_solutions}; .report(path) writes them all", "disagreements")
    blocks = "".join(comparison_block(cmp, rid) for rid in shown)
    return (f'<div class="sd-audit"><style>{theme.CSS}</style>{summary_html(cmp)}{agreement_html(cmp)}'
            f"{scores_html(cmp)}{plots_html(cmp)}<h3>Disagreements ({len(disagreeing)})</h3>{note}{blocks}</div>")
