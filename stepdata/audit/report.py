"""The audit report: one self-contained HTML page for a whole pairs table.

One file, no network: inline CSS, inline SVG plots, one small inline script
(the filter). It can be mailed, attached to an issue or opened from an
air-gapped cluster, and shows the same thing in ten years.

Safety: model text is escaped (see :mod:`stepdata.audit.pair_html`), and as a
second line of defence the page carries a Content-Security-Policy that lets
only our own filter script run (by its hash) and forbids every network load.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from stepdata import __version__
from stepdata.audit import theme
from stepdata.audit.pair_html import esc, pair_block
from stepdata.audit.summary import PairsSummary, summarize
from stepdata.audit.svg import bar_chart
from stepdata.io import write_text_atomic

# The filter: reads only data-* attributes and textContent, never writes markup.
# It marks <html data-audit-script="ready"> when it has run, so a test can tell
# "scripts ran, and only ours" from "scripts were off".
FILTER_SCRIPT = """
(function () {
  var bar = document.getElementById('sd-filter');
  if (!bar) { return; }
  var query = document.getElementById('sd-filter-text');
  var kind = document.getElementById('sd-filter-kind');
  var verified = document.getElementById('sd-filter-verified');
  var count = document.getElementById('sd-filter-count');
  var pairs = Array.prototype.slice.call(document.querySelectorAll('article.sd-pair'));
  var texts = null;
  function apply() {
    var q = query.value.toLowerCase(), k = kind.value, v = verified.value, shown = 0;
    if (q && texts === null) {
      texts = pairs.map(function (el) { return el.textContent.toLowerCase(); });
    }
    pairs.forEach(function (el, i) {
      var ok = (!k || el.getAttribute('data-kind') === k) &&
               (!v || el.getAttribute('data-verified') === v) &&
               (!q || texts[i].indexOf(q) >= 0);
      el.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + pairs.length + ' pairs on this page match';
  }
  [query, kind, verified].forEach(function (el) { el.addEventListener('input', apply); });
  bar.hidden = false;
  apply();
  document.documentElement.setAttribute('data-audit-script', 'ready');
})();
"""


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


CSP = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
       f"script-src '{_script_hash(FILTER_SCRIPT)}'; base-uri 'none'; form-action 'none'")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _chars(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _stat(key: str, number: str, what: str) -> str:
    return (f'<div class="sd-stat" data-stat="{esc(key)}"><span class="sd-num">{esc(number)}</span>'
            f'<span class="sd-what">{esc(what)}</span></div>')


def _counts_table(caption: str, counts: dict[str, int], total: int) -> str:
    rows = "".join(f'<tr><td>{esc(k)}</td><td class="sd-n">{v}</td><td class="sd-n">{_percent(v, total)}</td></tr>'
                   for k, v in counts.items())
    return (f'<table class="sd-counts" data-counts="{esc(caption)}"><tr><th>{esc(caption)}</th><th>pairs</th>'
            f"<th>share</th></tr>{rows}</table>")


def summary_html(summary: PairsSummary) -> str:
    """The summary numbers (pairs, problems, checks, lengths) and the counts by kind and source."""
    stats = "".join([
        _stat("pairs", str(summary.pairs), "pairs"),
        _stat("problems", str(summary.problems), "problems"),
        _stat("verified_share", _percent(summary.verified, summary.pairs),
              f"chosen verified ({summary.verified} of {summary.pairs})"),
        _stat("failed_check", str(summary.failed_check), "chosen failed its check"),
        _stat("unchecked", str(summary.unchecked), "chosen not checked"),
        _stat("median_chars", f"{_chars(summary.median_chosen_chars)} / {_chars(summary.median_rejected_chars)}",
              "median chars, chosen / rejected"),
    ])
    return (f'<div class="sd-stats">{stats}</div>'
            f'<div>{_counts_table("kind", summary.by_kind, summary.pairs)}'
            f'{_counts_table("source", summary.by_source, summary.pairs)}</div>')


def plots_html(summary: PairsSummary) -> str:
    """The three histograms: where errors are, how pairs spread over problems, chosen vs rejected length."""
    errors = bar_chart("Pairs by error step", summary.error_steps.labels,
                       [("pairs", theme.REJECTED, summary.error_steps.series["pairs"])],
                       "first wrong step (shown from 1)", "pairs")
    per_problem = bar_chart("Pairs per problem", summary.pairs_per_problem.labels,
                            [("problems", theme.NEUTRAL, summary.pairs_per_problem.series["problems"])],
                            "pairs of one problem", "problems")
    lengths = bar_chart("Length of chosen vs rejected", summary.lengths.labels,
                        [("chosen", theme.CHOSEN, summary.lengths.series["chosen"]),
                         ("rejected", theme.REJECTED, summary.lengths.series["rejected"])],
                        "characters", "pairs")
    return "".join(f'<figure class="sd-plot" data-plot="{name}" style="margin:0">{svg}</figure>'
                   for name, svg in (("error_step", errors), ("pairs_per_problem", per_problem),
                                     ("lengths", lengths)))


def left_out_note(shown: int, total: int, how: str) -> str:
    """The notice that a view shows only part of a table (never cut silently); "" when nothing is left out."""
    if shown >= total:
        return ""
    return (f'<p class="sd-note" data-left-out="{total - shown}">Showing the first {shown} of {total} pairs; '
            f"{total - shown} left out ({esc(how)}). Counts and plots cover all {total}.</p>")


def _metadata_html(meta: dict) -> str:
    if not meta:
        return ""
    text = json.dumps(meta, indent=1, ensure_ascii=False, default=str, sort_keys=True)
    return (f"<details><summary>Table metadata (schema version {esc(meta.get('schema_version'))}, written by "
            f"stepdata {esc(meta.get('stepdata_version'))})</summary>"
            f'<pre class="sd-text">{esc(text)}</pre></details>')


def _filter_html(kinds: list[str]) -> str:
    kind_options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in kinds)
    return (
        '<div class="sd-filter" id="sd-filter" hidden>'
        '<input type="search" id="sd-filter-text" placeholder="filter: text, pair_id, problem..." size="32">'
        f'<select id="sd-filter-kind"><option value="">all kinds</option>{kind_options}</select>'
        '<select id="sd-filter-verified"><option value="">verified or not</option>'
        '<option value="true">chosen verified</option><option value="false">chosen failed its check</option>'
        '<option value="unknown">chosen not checked</option></select>'
        '<span id="sd-filter-count" class="sd-muted"></span></div>'
    )


def render_report(pairs_df: pd.DataFrame, title: str = "stepdata pairs audit", max_pairs: int | None = None) -> str:
    """One self-contained HTML page auditing a pairs table.

    Summary numbers and plots count every row; then each pair is rendered
    (question, shared prefix, rejected step in red beside the chosen one in
    green). With ``max_pairs``, only the first ``max_pairs`` pairs are rendered
    and the page says how many were left out.
    """
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
    summary = summarize(pairs_df)
    total = len(pairs_df)
    shown_df = pairs_df if max_pairs is None else pairs_df.head(max_pairs)
    note = left_out_note(len(shown_df), total, f"max_pairs={max_pairs}")
    blocks = "\n".join(pair_block(row) for row in shown_df.to_dict("records"))
    shown_kinds = set(shown_df["kind"].dropna().astype(str)) if "kind" in shown_df.columns else set()
    kinds = [k for k in summary.by_kind if k in shown_kinds]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>body {{ margin: 0; background: #ffffff; }} main.sd-audit {{ max-width: 1280px; margin: 0 auto; "
        f"padding: 16px 20px; }}{theme.CSS}</style></head>\n"
        '<body><main class="sd-audit">'
        f"<h1>{esc(title)}</h1>"
        f'<p class="sd-muted">{total} pairs from {summary.problems} problems. Steps are numbered from 1 here '
        f"(error_step k in the data is Step k+1). Made by stepdata {esc(__version__)}.</p>"
        f"<h2>Summary</h2>{summary_html(summary)}"
        f'<div class="sd-plots">{plots_html(summary)}</div>'
        f"{_metadata_html(dict(pairs_df.attrs.get('stepdata') or {}))}"
        f"<h2>Pairs</h2>{note}{_filter_html(kinds)}\n{blocks}\n{note}"
        "</main>"
        f"<script>{FILTER_SCRIPT}</script>"
        "</body></html>\n"
    )


def write_report(pairs_df: pd.DataFrame, path: str | os.PathLike, title: str = "stepdata pairs audit",
                 max_pairs: int | None = None) -> Path:
    """Render the report of ``pairs_df`` and write it to ``path`` (UTF-8); returns the path."""
    return write_text_atomic(path, render_report(pairs_df, title=title, max_pairs=max_pairs))
