"""The annotation page: one self-contained HTML file where a person marks first wrong steps.

No server and no network: the page is opened from disk, keeps its progress in the
browser's localStorage (under the source table's fingerprint, so two tables never share
progress, and a page made again from the same table picks up where the person left off)
and saves the labels as a JSON lines file through a download link (a Blob, nothing is
sent anywhere). The saved file is what ``stepdata localize --method human --labels``
reads (:mod:`stepdata.annotate.labels`).

Safety as in the audit report: every piece of model or data-set text goes through
:func:`~stepdata.audit.pair_html.esc`, the script reads only ``data-*`` attributes and
form values and writes only text and attributes (never markup), and a
Content-Security-Policy lets only this page's own script run (by its hash) and loads
nothing from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepdata import __version__
from stepdata.annotate.source import AnnotationSet, Item
from stepdata.audit import theme
from stepdata.audit.page import script_hash
from stepdata.audit.pair_html import esc
from stepdata.io import write_text_atomic

STORAGE_PREFIX = "stepdata-annotate:"

# The page's behaviour. It marks <html data-annotate-script="ready"> once it has run, so a test can tell
# "our script ran" from "scripts were off".
SCRIPT = """
(function () {
  var root = document.getElementById('sd-annotate');
  if (!root) { return; }
  var fingerprint = root.getAttribute('data-table-fingerprint');
  var sourceTable = root.getAttribute('data-source-table');
  var key = '""" + STORAGE_PREFIX + """' + fingerprint;
  var articles = Array.prototype.slice.call(document.querySelectorAll('article.sd-solution'));
  var annotator = document.getElementById('sd-annotator');
  var progress = document.getElementById('sd-progress');
  var notice = document.getElementById('sd-notice');
  var link = document.getElementById('sd-download');
  var state = load();
  var current = null;

  function load() {
    try {
      var parsed = JSON.parse(window.localStorage.getItem(key) || 'null');
      if (parsed && typeof parsed === 'object' && parsed.labels && typeof parsed.labels === 'object') {
        return parsed;
      }
    } catch (e) { /* no storage, or something unreadable in it: start afresh */ }
    return {annotator: '', labels: {}};
  }
  function store() {
    try { window.localStorage.setItem(key, JSON.stringify(state)); }
    catch (e) { notice.textContent = 'This browser does not keep the progress: save the labels before closing.'; }
  }
  function idOf(article) { return article.getAttribute('data-solution-id'); }
  function entryOf(article) {
    var entry = state.labels[idOf(article)];
    return entry && typeof entry === 'object' ? entry : null;
  }
  function show(article) {
    var entry = entryOf(article);
    var chosen = entry && entry.label === 'step' ? Number(entry.step) : 0;
    article.querySelectorAll('li.sd-step').forEach(function (el) {
      var n = Number(el.getAttribute('data-step'));
      el.classList.toggle('sd-first-wrong', n === chosen);
      el.classList.toggle('sd-before', chosen > 0 && n < chosen);
      el.setAttribute('aria-pressed', n === chosen ? 'true' : 'false');
    });
    article.querySelectorAll('button[data-verdict]').forEach(function (el) {
      el.setAttribute('aria-pressed', entry && entry.label === el.getAttribute('data-verdict') ? 'true' : 'false');
    });
    var box = article.querySelector('textarea.sd-correction');
    box.disabled = !chosen;
    if (document.activeElement !== box) { box.value = chosen && entry.corrected_step ? entry.corrected_step : ''; }
    var verdict = article.querySelector('.sd-verdict');
    verdict.textContent = !entry ? 'not labelled' : entry.label === 'step' ? 'first wrong step: Step ' + chosen :
      entry.label === 'no_error' ? 'no error' : "can't tell";
    article.setAttribute('data-label', entry ? entry.label : '');
  }
  function count() {
    var done = articles.filter(entryOf).length;
    progress.textContent = done + ' of ' + articles.length + ' solutions labelled';
  }
  function set(article, label, step) {
    var before = entryOf(article);
    var entry = {label: label, step: label === 'step' ? step : null, corrected_step: null,
                 annotator: state.annotator || null, time: new Date().toISOString()};
    if (before && before.label === 'step' && label === 'step' && Number(before.step) === step) {
      entry.corrected_step = before.corrected_step || null;  // the same step again keeps its correction
    }
    state.labels[idOf(article)] = entry;
    store(); show(article); count();
  }
  function clear(article) {
    delete state.labels[idOf(article)];
    store(); show(article); count();
  }
  function record(article) {
    var entry = entryOf(article);
    return {
      solution_id: idOf(article), problem_id: article.getAttribute('data-problem-id'), label: entry.label,
      step: entry.label === 'step' ? Number(entry.step) : null,
      corrected_step: entry.label === 'step' && entry.corrected_step ? entry.corrected_step : null,
      annotator: entry.annotator || state.annotator || null, time: entry.time,
      table_fingerprint: fingerprint, steps_sha256: article.getAttribute('data-steps-sha256'),
      source_table: sourceTable
    };
  }
  function save() {
    var lines = articles.filter(entryOf).map(function (a) { return JSON.stringify(record(a)) + '\\n'; });
    var url = URL.createObjectURL(new Blob(lines, {type: 'application/x-ndjson'}));
    link.href = url;
    link.download = 'labels-' + fingerprint + '.jsonl';
    link.click();
    notice.textContent = 'Saved ' + lines.length + ' label(s) as ' + link.download + '.';
    window.setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  }
  function focus(article) {
    current = article;
    article.focus();
    article.scrollIntoView({block: 'nearest'});
  }
  root.addEventListener('click', function (event) {
    var article = event.target.closest('article.sd-solution');
    if (!article) { return; }
    current = article;
    var step = event.target.closest('li.sd-step');
    var button = event.target.closest('button[data-verdict]');
    if (step) {
      set(article, 'step', Number(step.getAttribute('data-step')));
    } else if (button) {
      var verdict = button.getAttribute('data-verdict');
      if (verdict === 'clear') { clear(article); } else { set(article, verdict, null); }
    }
  });
  root.addEventListener('input', function (event) {
    if (event.target === annotator) {
      state.annotator = annotator.value;
      store();
      return;
    }
    if (!event.target.classList.contains('sd-correction')) { return; }
    var article = event.target.closest('article.sd-solution');
    var entry = entryOf(article);
    if (!entry || entry.label !== 'step') { return; }
    entry.corrected_step = event.target.value;
    store();
  });
  document.addEventListener('keydown', function (event) {
    var tag = event.target.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA' || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var at = current ? articles.indexOf(current) : -1;
    if (event.key === 'j' || event.key === 'k') {
      var next = articles[Math.min(articles.length - 1, Math.max(0, at + (event.key === 'j' ? 1 : -1)))];
      if (next) { focus(next); }
    } else if (current && /^[1-9]$/.test(event.key)) {
      var step = current.querySelector('li.sd-step[data-step="' + event.key + '"]');
      if (step) { set(current, 'step', Number(event.key)); }
    } else if (current && event.key === 'n') {
      set(current, 'no_error', null);
    } else if (current && event.key === '?') {
      set(current, 'cant_tell', null);
    } else {
      return;
    }
    event.preventDefault();
  });
  document.getElementById('sd-save').addEventListener('click', save);
  annotator.value = state.annotator || '';
  articles.forEach(show);
  count();
  root.hidden = false;
  document.documentElement.setAttribute('data-annotate-script', 'ready');
})();
"""


CSP = (f"default-src 'none'; style-src 'unsafe-inline'; script-src '{script_hash(SCRIPT)}'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
.sd-audit .sd-toolbar { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; position: sticky; top: 0;
  background: #ffffff; padding: 8px 0; z-index: 1; border-bottom: 1px solid #d0d7de; }
.sd-audit article.sd-solution { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; margin: 12px 0; }
.sd-audit article.sd-solution:focus { outline: 2px solid #0969da; }
.sd-audit article.sd-solution[data-label="step"] { border-left: 5px solid #c62828; }
.sd-audit article.sd-solution[data-label="no_error"] { border-left: 5px solid #2e7d32; }
.sd-audit article.sd-solution[data-label="cant_tell"] { border-left: 5px solid #8c959f; }
.sd-audit ol.sd-steps { list-style: none; padding: 0; margin: 6px 0; }
.sd-audit li.sd-step { display: grid; grid-template-columns: 64px 1fr; gap: 8px; align-items: start; cursor: pointer;
  border: 1px solid transparent; border-radius: 4px; padding: 2px; margin: 2px 0; }
.sd-audit li.sd-step:hover { border-color: #0969da; }
.sd-audit li.sd-step .sd-num { font-weight: 600; color: #5d6770; padding-top: 6px; font-size: 13px; }
.sd-audit li.sd-step.sd-first-wrong pre.sd-text { background: #fde3e1; border-left: 4px solid #c62828; }
.sd-audit li.sd-step.sd-before pre.sd-text { background: #e3f4e4; }
.sd-audit .sd-actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 6px 0; }
.sd-audit button[aria-pressed="true"] { font-weight: 600; outline: 2px solid #1f2328; }
.sd-audit textarea.sd-correction { width: 100%; box-sizing: border-box; font-family: ui-monospace, SFMono-Regular,
  Menlo, Consolas, monospace; font-size: 13px; }
.sd-audit .sd-verdict { font-size: 13px; }
"""


def _question_html(item: Item) -> str:
    if item.question is not None:
        return f'<div class="sd-label">Question</div><pre class="sd-text">{esc(item.question)}</pre>'
    return (f'<div class="sd-label">Prompt <span class="sd-muted">(the exact text sent; the question is not '
            f'known)</span></div><pre class="sd-text">{esc(item.prompt or "")}</pre>')


def item_html(item: Item, number: int, total: int) -> str:
    """One solution: its question, its steps (numbered from 1, each a click target), the verdict buttons and
    the box for a corrected step."""
    steps = "".join(
        f'<li class="sd-step" data-step="{i}" role="button" aria-pressed="false" title="Step {i} is the first wrong '
        f'step"><span class="sd-num">Step {i}</span><pre class="sd-text">{esc(step)}</pre></li>'
        for i, step in enumerate(item.steps, start=1))
    cut = ('<span class="sd-tag sd-bad" title="finish_reason = length">cut at max_tokens: its last steps were '
           "never written</span>") if not item.finished else ""
    return (
        f'<article class="sd-solution" tabindex="-1" data-solution-id="{esc(item.solution_id)}" '
        f'data-problem-id="{esc(item.problem_id)}" data-steps-sha256="{esc(item.steps_sha256)}" '
        f'data-steps="{len(item.steps)}" data-label="">'
        f'<div class="sd-head"><span class="sd-tag sd-count">{number} of {total}</span>'
        f'<span class="sd-id" title="solution id (rollout_id)">{esc(item.solution_id)}</span>'
        f'<span class="sd-tag" title="problem_id">{esc(item.problem_id)}</span>{cut}'
        f'<span class="sd-verdict sd-muted">not labelled</span></div>'
        f"{_question_html(item)}"
        f'<div class="sd-label">Gold answer: <span class="sd-muted">{esc(item.gold if item.gold is not None else "not known")}'
        f'</span> &middot; the solution\'s answer: <span class="sd-muted">'
        f'{esc(item.pred_answer if item.pred_answer is not None else "none stated")}</span></div>'
        f'<div class="sd-label">Solution <span class="sd-muted">(click its first wrong step)</span></div>'
        f'<ol class="sd-steps">{steps}</ol>'
        '<div class="sd-actions"><button type="button" data-verdict="no_error" aria-pressed="false">No error</button>'
        '<button type="button" data-verdict="cant_tell" aria-pressed="false">Can\'t tell</button>'
        '<button type="button" data-verdict="clear">Clear</button></div>'
        '<label class="sd-label">Corrected step <span class="sd-muted">(optional: what the first wrong step should '
        'say; it can become the chosen side of a pair)</span>'
        '<textarea class="sd-correction" rows="2" disabled></textarea></label>'
        "</article>"
    )


def render_page(annotation: AnnotationSet, title: str | None = None) -> str:
    """The whole page for ``annotation`` (see the module doc)."""
    title = title or f"Annotate first errors: {Path(annotation.source).name}"
    shown, total = len(annotation.items), annotation.total
    left_out = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in annotation.left_out.items() if n)
    notes = "".join(f'<p class="sd-note">{esc(note)}</p>' for note in annotation.notes)
    if shown < total:
        notes += f'<p class="sd-note">Showing {shown} of the table\'s {total} wrong solutions ({esc(left_out)}).</p>'
    blocks = "\n".join(item_html(item, i, shown) for i, item in enumerate(annotation.items, start=1))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>body {{ margin: 0; background: #ffffff; }} main.sd-audit {{ max-width: 1100px; margin: 0 auto; "
        f"padding: 16px 20px; }}{theme.CSS}{CSS}</style></head>\n"
        '<body><main class="sd-audit">'
        f"<h1>{esc(title)}</h1>"
        f'<p class="sd-muted">For each wrong solution, click its first wrong step, or say there is no error or that you '
        "cannot tell; you may type what the wrong step should say. Steps are numbered from 1 here (Step k is error_step "
        "k-1 in the data). Your progress stays in this browser; <b>Save labels</b> downloads them as a JSON lines file "
        "for <code>stepdata localize SOURCE --method human --labels FILE</code>. Keys: j / k next and previous "
        "solution, 1-9 a step, n no error, ? can't tell.</p>"
        f'<p class="sd-muted">Source table <span class="sd-id">{esc(annotation.source)}</span> ({esc(annotation.kind)}, '
        f'fingerprint <span class="sd-id">{esc(annotation.fingerprint)}</span>); made by stepdata {esc(__version__)}.</p>'
        f"{notes}"
        "<noscript><p class=\"sd-note\">This page needs JavaScript to record labels.</p></noscript>"
        f'<div id="sd-annotate" hidden data-table-fingerprint="{esc(annotation.fingerprint)}" '
        f'data-source-table="{esc(Path(annotation.source).name)}">'
        '<div class="sd-toolbar"><label>Annotator <input type="text" id="sd-annotator" size="18" '
        'placeholder="your name or id"></label>'
        '<button type="button" id="sd-save">Save labels</button><a id="sd-download" hidden>download</a>'
        '<span id="sd-progress" class="sd-muted"></span><span id="sd-notice" class="sd-muted"></span></div>\n'
        f"{blocks}\n</div>"
        "</main>"
        f"<script>{SCRIPT}</script>"
        "</body></html>\n"
    )


def write_page(annotation: AnnotationSet, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write :func:`render_page` to ``path`` (UTF-8); returns the path."""
    return write_text_atomic(path, render_page(annotation, title))
