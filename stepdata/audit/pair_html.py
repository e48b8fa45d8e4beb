"""The HTML block of one pair: the single rendering shared by the report and the notebook views.

Everything that comes from a model or a data set (questions, steps, ids, kinds,
provenance) goes through :func:`esc` before it touches the markup. Model text is
untrusted: a completion reading ``<script>...</script>`` must be shown as those
characters, never run, in a report opened in a browser or in a notebook.

The block depends only on the row, never on its position in a table, so a pair
looks (byte for byte) the same alone and inside a table.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from typing import Any

from stepdata.audit import fields


def esc(value: Any) -> str:
    """Escape text for HTML content and attribute values (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def anchor(pair_id: str) -> str:
    """A stable, markup-safe element id for a pair (pair ids hold ':' and arbitrary text)."""
    return "pair-" + hashlib.sha256(pair_id.encode("utf-8", "replace")).hexdigest()[:12]


def _pre(text: str | None, empty: str = "(empty)") -> str:
    if not text:
        return f'<pre class="sd-text"><span class="sd-empty">{esc(empty)}</span></pre>'
    return f'<pre class="sd-text">{esc(text)}</pre>'


def _verified_tag(verified: bool | None) -> tuple[str, str]:
    """(data attribute value, tag HTML) for the chosen_verified flag."""
    if verified is True:
        return "true", '<span class="sd-tag sd-ok" title="chosen_verified = true">chosen verified \u2713</span>'
    if verified is False:
        return "false", ('<span class="sd-tag sd-bad" title="chosen_verified = false">'
                         "chosen failed its check \u2717</span>")
    return "unknown", '<span class="sd-tag" title="chosen_verified = null">chosen not checked</span>'


def _side_titles(kind: str | None, step: str) -> tuple[str, str]:
    """What chosen/rejected hold depends on the kind (see the PAIRS schema)."""
    if kind == "step-dpo":
        return f"Rejected step ({step})", f"Chosen step ({step})"
    if kind == "scdpo":
        return f"Rejected continuation (from {step})", f"Chosen continuation (from {step})"
    if kind == "dpo":
        return "Rejected solution", "Chosen solution"
    return f"Rejected ({step})", f"Chosen ({step})"


def _prefix_html(partial: str, prefix_steps: list[str]) -> str:
    """The shared prefix: the template's partial answer, then each prefix step (hover shows its number)."""
    if not partial and not prefix_steps:
        return _pre("", "(empty: both sides start the answer)")
    spans = []
    if partial:
        spans.append(f'<span class="sd-partial" title="partial answer from the prompt template">{esc(partial)}</span>')
    for i, step in enumerate(prefix_steps):
        spans.append(f'<span class="sd-prefix-step" title="{esc(fields.error_step_label(i))}">{esc(step)}</span>')
    return f'<pre class="sd-text sd-prefix">{"".join(spans)}</pre>'


def _ends_tag(ends: bool | None) -> str:
    """Whether a side ends the solution (trainers append end-of-sequence to it)."""
    if ends is None:
        return ""
    if ends:
        return ' <span class="sd-tag" title="gets end-of-sequence in training">ends the solution</span>'
    return ' <span class="sd-tag">solution continues</span>'


def _provenance_html(row: Mapping[str, Any]) -> str:
    """Model, localizer and sampling of the pair, as a small table."""
    prov = fields.as_mapping(row.get("provenance"))
    cells = []
    for key in ("model", "localizer", "sampling"):
        value = prov.get(key)
        shown = esc(value) if value not in (None, "", "{}") else '<span class="sd-empty">none</span>'
        cells.append(f"<tr><th>{esc(key)}</th><td>{shown}</td></tr>")
    return f'<table class="sd-counts">{"".join(cells)}</table>'


def pair_block(row: Mapping[str, Any]) -> str:
    """The ``<article>`` showing one pair: question, shared prefix, rejected (red) beside chosen (green).

    ``row`` is a mapping of column name to value (a dict, or ``Series.to_dict()``);
    absent or null optional columns are shown as missing.
    """
    pair_id = fields.text(row, "pair_id") or "(no pair_id)"
    kind = fields.text(row, "kind")
    source = fields.text(row, "source")
    step = fields.error_step_label(row.get("error_step"))
    verified_attr, verified_tag = _verified_tag(fields.as_bool(row.get("chosen_verified")))
    rejected_title, chosen_title = _side_titles(kind, step)
    answer = fields.text(row, "answer")
    problem_id = fields.text(row, "problem_id")
    prefix = _prefix_html(fields.partial_answer(row.get("prompt_messages")), fields.as_list(row.get("prefix_steps")))
    chosen_ends = fields.as_bool(row.get("chosen_ends_solution"))
    rejected_ends = fields.as_bool(row.get("rejected_ends_solution"))
    return (
        f'<article class="sd-pair" id="{anchor(pair_id)}" data-pair-id="{esc(pair_id)}" '
        f'data-kind="{esc(kind or "")}" data-source="{esc(source or "")}" data-verified="{verified_attr}">'
        '<div class="sd-head">'
        f'<span class="sd-tag sd-step sd-bad" title="error_step = {esc(fields.as_int(row.get("error_step")))}'
        ' (0-based)">'
        f'error at {esc(step)}</span>'
        f'<span class="sd-tag">{esc(kind or "no kind")}</span>'
        f"{verified_tag}"
        f'<span class="sd-tag">source: {esc(source or "unknown")}</span>'
        f'<span class="sd-id" title="pair_id">{esc(pair_id)}</span>'
        "</div>"
        f'<div class="sd-label">Question <span class="sd-muted">(problem {esc(problem_id or "?")}; gold answer: '
        f'{esc(answer) if answer is not None else "none"})</span></div>'
        f"{_pre(fields.text(row, 'question'))}"
        '<div class="sd-label">Shared prefix</div>'
        f"{prefix}"
        '<div class="sd-sides">'
        f'<div class="sd-side sd-rejected"><div class="sd-label">{esc(rejected_title)}{_ends_tag(rejected_ends)}</div>'
        f"{_pre(fields.text(row, 'rejected'))}</div>"
        f'<div class="sd-side sd-chosen"><div class="sd-label">{esc(chosen_title)}{_ends_tag(chosen_ends)}</div>'
        f"{_pre(fields.text(row, 'chosen'))}</div>"
        "</div>"
        "<details><summary>Complete solutions and provenance</summary>"
        '<div class="sd-sides">'
        f'<div class="sd-side sd-rejected"><div class="sd-label">rejected_full</div>'
        f"{_pre(fields.text(row, 'rejected_full'), '(missing)')}</div>"
        f'<div class="sd-side sd-chosen"><div class="sd-label">chosen_full</div>'
        f"{_pre(fields.text(row, 'chosen_full'), '(missing)')}</div>"
        "</div>"
        f"{_provenance_html(row)}"
        "</details>"
        "</article>"
    )


def row_dict(row: Any) -> dict[str, Any]:
    """A row given as a pandas Series, a mapping or a one-row DataFrame, as a plain dict."""
    import pandas as pd

    if isinstance(row, pd.DataFrame):
        if len(row) != 1:
            raise ValueError(f"expected one pair, got a table of {len(row)} rows; use PairsView for tables")
        return row.iloc[0].to_dict()
    if isinstance(row, pd.Series):
        return row.to_dict()
    if isinstance(row, Mapping):
        return dict(row)
    raise TypeError(f"expected a pair as a pandas Series, a dict or a one-row DataFrame, got {type(row).__name__}")
