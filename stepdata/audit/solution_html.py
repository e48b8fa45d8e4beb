"""The HTML block of one solution (a rollout, or a localized rollout): shared by the report and the notebook views.

What a researcher checks to decide whether a localizer can be trusted: the
steps numbered from 1, the first wrong step highlighted and the steps after it
dimmed, how the solution ended (right, wrong, no answer, unfinished; the finish
reason), and the localizer's evidence beside it: the false claim (rules, exact),
the judge's votes and replies, the MC value of every probed prefix (rollouts),
a PRM's score of every step as a small bar chart.

Like :mod:`stepdata.audit.pair_html`, the block depends only on the row, and
everything from a model or a data set is escaped before it touches the markup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stepdata.answers import is_unfinished
from stepdata.answers.policy import LENGTH
from stepdata.audit import fields
from stepdata.audit.evidence import Evidence, read_evidence, vote_label
from stepdata.audit.page import slug
from stepdata.audit.pair_html import esc
from stepdata.audit.svg import score_strip
from stepdata.schema import status_of_error_step
from stepdata.steps import step_label

# How a sampled solution ended, counted as the sample stage counts them (stepdata.pipeline.sample.rollout_counts).
OUTCOMES: dict[str, str] = {
    "right": "right",
    "wrong": "wrong",
    "no_answer": "no answer",
    "unfinished": "unfinished (cut at max_tokens)",
    "not_judged": "not judged",
}


def outcome_of(row: Mapping[str, Any]) -> str:
    """One of :data:`OUTCOMES`: right; else unfinished when cut at max_tokens; wrong or no answer; not judged."""
    correct = fields.as_bool(row.get("correct"))
    if correct is True:
        return "right"
    if is_unfinished(fields.text(row, "finish_reason")):
        return "unfinished"
    if correct is False:
        return "wrong" if fields.text(row, "pred_answer") is not None else "no_answer"
    return "not_judged"


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def outcomes(df: pd.DataFrame) -> pd.Series:
    """:func:`outcome_of` of every row of ``df``, vectorised (a table of a million rows is fine)."""
    correct = _column(df, "correct").astype(object)
    unfinished = _column(df, "finish_reason").astype(object).eq(LENGTH).to_numpy()
    right = correct.eq(True).to_numpy()
    wrong = correct.eq(False).to_numpy()
    stated = _column(df, "pred_answer").notna().to_numpy()
    picked = np.select([right, unfinished, wrong & stated, wrong], ["right", "unfinished", "wrong", "no_answer"],
                       "not_judged")
    return pd.Series(picked, index=df.index, dtype=object)


def statuses(df: pd.DataFrame) -> pd.Series:
    """:func:`status_of` of every row of a localized table, vectorised."""
    status = _column(df, "status")
    if status.notna().all():
        return status.astype(str).astype(object)
    return pd.Series([status_of(r) for r in df.to_dict("records")], index=df.index, dtype=object)


def status_of(row: Mapping[str, Any]) -> str:
    """A localized row's status (from ``error_step`` in a table written before the status column)."""
    status = fields.text(row, "status")
    return status if status is not None else status_of_error_step(fields.as_int(row.get("error_step")))


def verdict_label(status: str, error_step: int | None) -> str:
    """A localizer's answer as people read it: "Step k" (from 1), "no error", "unknown" or "unfinished"."""
    if status == "error" and error_step is not None and error_step >= 0:
        return step_label(error_step)
    return {"no_error": "no error"}.get(status, status)


_EMPTY = '<span class="sd-empty">{}</span>'


def solution_anchor(rollout_id: str) -> str:
    """A stable, markup-safe element id for a solution."""
    return "solution-" + hashlib.sha256(rollout_id.encode("utf-8", "replace")).hexdigest()[:12]


def _outcome_tag(outcome: str) -> str:
    css = {"right": " sd-ok", "wrong": " sd-bad", "no_answer": " sd-bad"}.get(outcome, "")
    mark = {"right": " \u2713", "wrong": " \u2717", "no_answer": " \u2717"}.get(outcome, "")
    return f'<span class="sd-tag{css}" title="how the solution ended">{esc(OUTCOMES[outcome])}{mark}</span>'


def step_badges(evidence: Evidence, n_steps: int) -> dict[int, str]:
    """Per step, a short reading of the evidence shown beside it: a PRM's score, the MC value after it."""
    badges: dict[int, str] = {}
    if evidence.form == "prm":
        for i, score in enumerate(evidence.step_scores[:n_steps]):
            low = evidence.threshold is not None and score < evidence.threshold
            badges[i] = (f'<span class="sd-badge{" sd-low" if low else ""}" title="P(step is good) from the PRM">'
                         f"score {score:.2f}</span>")
    elif evidence.form == "mc":
        for prefix, value in evidence.mc.items():
            if 1 <= prefix <= n_steps:
                badges[prefix - 1] = (f'<span class="sd-badge{" sd-low" if value == 0 else ""}" title="share of '
                                      f'continuations after this step that reach the gold answer">MC {value:.2f}'
                                      "</span>")
    return badges


def steps_html(steps: Sequence[str], wrong: int | None = None, marks: Mapping[int, Sequence[str]] | None = None,
               badges: Mapping[int, str] | None = None) -> str:
    """The steps as a numbered list (from 1): ``wrong`` highlighted and the steps after it dimmed.

    ``marks`` lists, per step, the localizers that put the first error there (the comparison
    view); ``badges`` holds ready markup (a score) to show beside a step.
    """
    if not steps:
        return '<pre class="sd-text"><span class="sd-empty">(no steps)</span></pre>'
    items = []
    for i, step in enumerate(steps):
        css = " sd-wrong" if wrong is not None and i == wrong else (
            " sd-after" if wrong is not None and wrong >= 0 and i > wrong else "")
        tags = "".join(f'<span class="sd-mark" title="{esc(name)} puts the first error here">{esc(name)}</span>'
                       for name in (marks or {}).get(i, ()))
        badge = (badges or {}).get(i, "")
        side = f'<div class="sd-side-notes">{badge}{tags}</div>' if badge or tags else ""
        items.append(f'<li class="sd-step{css}" data-step="{i}"><span class="sd-stepno">{esc(step_label(i))}</span>'
                     f'<pre class="sd-text">{esc(step)}</pre>{side}</li>')
    return f'<ol class="sd-steps">{"".join(items)}</ol>'


def _judge_html(evidence: Evidence) -> str:
    readable = len(evidence.votes)
    replies = "".join(
        f'<details class="sd-reply"><summary>Reply {i + 1}'
        f'{f" (vote: {esc(vote_label(evidence.votes[i]))})" if len(evidence.replies) == readable else ""}'
        f'</summary><pre class="sd-text">{esc(reply)}</pre></details>'
        for i, reply in enumerate(evidence.replies))
    return (f'<div class="sd-ev-line" data-evidence="judge">{esc(evidence.summary)}</div>'
            f"{replies or _EMPTY.format('no replies kept')}")


def _mc_html(evidence: Evidence) -> str:
    prefixes = sorted(evidence.mc)
    labels = [str(i) for i in prefixes]
    chart = score_strip("MC value by steps kept (0: the question alone)", labels, [evidence.mc[i] for i in prefixes],
                        threshold=1e-9, show_threshold=False)  # a prefix from which nothing succeeds is red
    return f'<div class="sd-ev-line" data-evidence="mc">{esc(evidence.summary)}</div>{chart}'


def _prm_html(evidence: Evidence) -> str:
    labels = [str(i + 1) for i in range(len(evidence.step_scores))]
    chart = score_strip("PRM score by step", labels, evidence.step_scores, threshold=evidence.threshold) \
        if evidence.step_scores else ""
    return f'<div class="sd-ev-line" data-evidence="prm">{esc(evidence.summary)}</div>{chart}'


def evidence_html(evidence: Evidence) -> str:
    """The localizer's evidence as a panel: the false claim, the votes and replies, the MC values, the scores."""
    if evidence.form == "none":
        return '<span class="sd-empty">no rationale recorded</span>'
    if evidence.form == "claim":
        return (f'<div class="sd-ev-line" data-evidence="claim">{esc(step_label(evidence.step or 0))}: the claim '
                f'<code class="sd-claim">{esc(evidence.claim)}</code> is false ({esc(evidence.detail)})</div>')
    if evidence.form == "judge":
        return _judge_html(evidence)
    if evidence.form == "mc":
        return _mc_html(evidence)
    if evidence.form == "prm":
        return _prm_html(evidence)
    return f'<div class="sd-ev-line" data-evidence="{esc(evidence.form)}">{esc(evidence.summary)}</div>'


def _problem_html(row: Mapping[str, Any], problem: Mapping[str, Any] | None) -> str:
    predicted = fields.text(row, "pred_answer")
    answer = f'predicted answer: {esc(predicted) if predicted is not None else "none"}'
    if problem is None:
        return (f'<div class="sd-label">Solution <span class="sd-muted">(problem {esc(fields.text(row, "problem_id"))}; '
                f"{answer})</span></div>")
    gold = fields.text(problem, "answer")
    return (f'<div class="sd-label">Question <span class="sd-muted">(problem {esc(fields.text(row, "problem_id"))}; '
            f'gold answer: {esc(gold) if gold is not None else "none"}; {answer})</span></div>'
            f'<pre class="sd-text">{esc(fields.text(problem, "question"))}</pre>'
            '<div class="sd-label">Solution</div>')


def _details_html(row: Mapping[str, Any], localized: bool) -> str:
    sampling = fields.as_mapping(row.get("sampling"))
    cells = [("model", fields.text(row, "model")),
             ("sampling", ", ".join(f"{k}={v}" for k, v in sampling.items() if not fields.is_missing(v)) or None),
             ("tokens", f"prompt {fields.as_int(row.get('prompt_tokens'))}, "
                        f"completion {fields.as_int(row.get('completion_tokens'))}")]
    if localized:
        cells += [("localizer cost", f"{fields.as_int(row.get('localizer_calls'))} calls, "
                                     f"{fields.as_int(row.get('localizer_tokens'))} tokens"),
                  ("rationale", fields.text(row, "rationale"))]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v) if v else _EMPTY.format('none')}</td></tr>"
                    for k, v in cells)
    return ("<details><summary>Prompt, model and sampling</summary>"
            f'<div class="sd-label">Prompt (the exact text sent)</div><pre class="sd-text">'
            f'{esc(fields.text(row, "prompt"))}</pre><table class="sd-counts">{table}</table></details>')


def localization_tags(row: Mapping[str, Any]) -> str:
    """The head tags of a localized row: where the first error is, the method, the confidence."""
    status = status_of(row)
    step = fields.as_int(row.get("error_step"))
    css = " sd-bad sd-step" if status == "error" else (" sd-ok" if status == "no_error" else "")
    label = verdict_label(status, step)
    what = f"first error at {label}" if status == "error" else ("no error found" if status == "no_error" else label)
    confidence = fields.as_float(row.get("confidence"))
    conf = (f'<span class="sd-tag" title="the localizer\'s confidence">confidence {confidence:.2f}</span>'
            if confidence is not None else "")
    return (f'<span class="sd-tag{css}" title="error_step = {esc(step)} (0-based), status = {esc(status)}">'
            f'{esc(what)}</span><span class="sd-tag">method: {esc(fields.text(row, "method") or "none")}</span>{conf}')


def solution_block(row: Mapping[str, Any], localized: bool, problem: Mapping[str, Any] | None = None) -> str:
    """The ``<article>`` showing one solution (see the module doc); ``localized`` adds the localizer's answer.

    ``problem`` (a problems-table row) adds the question and the gold answer.
    """
    rollout_id = fields.text(row, "rollout_id") or "(no rollout_id)"
    steps = fields.as_list(row.get("steps"))
    outcome = outcome_of(row)
    finish = fields.text(row, "finish_reason")
    attrs = {"rollout-id": rollout_id, "problem": fields.text(row, "problem_id") or "", "outcome": outcome,
             "finish": finish or "none"}
    wrong, badges, head, panel = None, {}, "", ""
    if localized:
        status = status_of(row)
        step = fields.as_int(row.get("error_step"))
        wrong = step if status == "error" else None
        evidence = read_evidence(row.get("rationale"))
        badges = step_badges(evidence, len(steps))
        attrs |= {"status": status, "method": slug(fields.text(row, "method") or "none")}
        head = localization_tags(row)
        panel = (f'<div class="sd-evidence"><div class="sd-label">Evidence '
                 f'<span class="sd-muted">({esc(fields.text(row, "method") or "no method")})</span></div>'
                 f"{evidence_html(evidence)}</div>")
    error = fields.text(row, "error")
    error_html = f'<p class="sd-note" data-row-error="1">row error: {esc(error)}</p>' if error else ""
    data = " ".join(f'data-{k}="{esc(v)}"' for k, v in attrs.items())
    return (
        f'<article class="sd-solution" id="{solution_anchor(rollout_id)}" {data}>'
        '<div class="sd-head">'
        f"{head}{_outcome_tag(outcome)}"
        f'<span class="sd-tag" title="why generation stopped">finish: {esc(finish or "unknown")}</span>'
        f'<span class="sd-id" title="rollout_id">{esc(rollout_id)}</span>'
        "</div>"
        f"{error_html}{_problem_html(row, problem)}"
        f"{steps_html(steps, wrong, badges=badges)}"
        f"{panel}{_details_html(row, localized)}"
        "</article>"
    )
