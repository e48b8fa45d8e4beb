"""The shell every audit page shares: head, stylesheet, content security policy and the filter script.

Three pages use it (pairs, rollouts/localized tables, a comparison of
localizers), so they are safe in the same way and filter the same way. One
script, hashed into the page's Content-Security-Policy: nothing else may run,
and nothing may be loaded from the network.

The filter is generic: the bar names the items it filters (``data-items``, a CSS
selector) and each ``<select data-filter="NAME">`` keeps the items whose
``data-NAME`` attribute equals the chosen value (or, with ``data-tokens``, holds
it among its space-separated words, for an item that belongs to several values:
a solution on which two localizers disagree with the reference). A search box
matches the item's text. The page works without the script too: the bar stays
hidden and every item is shown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence

from stepdata import __version__
from stepdata.audit import theme
from stepdata.audit.pair_html import esc

# Reads only data-* attributes and textContent, never writes markup. It marks
# <html data-audit-script="ready"> when it has run, so a test can tell "scripts
# ran, and only ours" from "scripts were off".
FILTER_SCRIPT = """
(function () {
  var bar = document.getElementById('sd-filter');
  if (!bar) { return; }
  var query = document.getElementById('sd-filter-text');
  var count = document.getElementById('sd-filter-count');
  var selects = Array.prototype.slice.call(bar.querySelectorAll('select[data-filter]'));
  var items = Array.prototype.slice.call(document.querySelectorAll(bar.getAttribute('data-items')));
  var noun = bar.getAttribute('data-noun') || 'items';
  var texts = null;
  function keeps(el, select) {
    var want = select.value, got = el.getAttribute('data-' + select.getAttribute('data-filter')) || '';
    if (!want) { return true; }
    if (select.hasAttribute('data-tokens')) { return (' ' + got + ' ').indexOf(' ' + want + ' ') >= 0; }
    return got === want;
  }
  function apply() {
    var q = query.value.toLowerCase(), shown = 0;
    if (q && texts === null) {
      texts = items.map(function (el) { return el.textContent.toLowerCase(); });
    }
    items.forEach(function (el, i) {
      var ok = (!q || texts[i].indexOf(q) >= 0) && selects.every(function (s) { return keeps(el, s); });
      el.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + items.length + ' ' + noun + ' on this page match';
  }
  [query].concat(selects).forEach(function (el) { el.addEventListener('input', apply); });
  bar.hidden = false;
  apply();
  document.documentElement.setAttribute('data-audit-script', 'ready');
})();
"""


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script (its sha256), so a page runs its own code only."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


CSP = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
       f"script-src '{script_hash(FILTER_SCRIPT)}'; base-uri 'none'; form-action 'none'")

_SLUG = re.compile(r"[^a-z0-9+._-]+")


def slug(value: object) -> str:
    """A filter value as one word (lower case, no spaces), so it can sit in a space-separated token list."""
    return _SLUG.sub("_", str(value).lower()).strip("_") or "none"


def filter_bar(items: str, noun: str, selects: Sequence[tuple[str, str, Sequence[tuple[str, str]]]],
               placeholder: str = "filter: text, ids, problem...", tokens: Sequence[str] = (),
               selected: dict[str, str] | None = None) -> str:
    """The filter bar: a search box and one ``<select>`` per (attribute name, "all" label, [(value, label)]).

    ``items`` is the CSS selector of what is filtered; names in ``tokens`` match by word (see the module doc);
    ``selected`` pre-selects a value of a select (the page then opens filtered, and says so in the count).
    """
    chosen = selected or {}
    parts = []
    for name, everything, options in selects:
        rendered = "".join(
            f'<option value="{esc(value)}"{" selected" if chosen.get(name) == value else ""}>{esc(label)}</option>'
            for value, label in options)
        token_attr = " data-tokens" if name in tokens else ""
        parts.append(f'<select data-filter="{esc(name)}"{token_attr} aria-label="{esc(everything)}">'
                     f'<option value="">{esc(everything)}</option>{rendered}</select>')
    return (f'<div class="sd-filter" id="sd-filter" data-items="{esc(items)}" data-noun="{esc(noun)}" hidden>'
            f'<input type="search" id="sd-filter-text" placeholder="{esc(placeholder)}" size="32">'
            f'{"".join(parts)}<span id="sd-filter-count" class="sd-muted"></span></div>')


def metadata_html(meta: dict, label: str = "Table metadata") -> str:
    """The table's stepdata metadata (kind, schema version, the run's config) in a closed details block."""
    if not meta:
        return ""
    text = json.dumps(meta, indent=1, ensure_ascii=False, default=str, sort_keys=True)
    return (f"<details><summary>{esc(label)} (schema version {esc(meta.get('schema_version'))}, written by "
            f"stepdata {esc(meta.get('stepdata_version'))})</summary>"
            f'<pre class="sd-text">{esc(text)}</pre></details>')


def stat(key: str, number: str, what: str) -> str:
    """One number of a page's summary row, with ``data-stat`` for tests and scripts."""
    return (f'<div class="sd-stat" data-stat="{esc(key)}"><span class="sd-num">{esc(number)}</span>'
            f'<span class="sd-what">{esc(what)}</span></div>')


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def counts_table(caption: str, counts: dict[str, int], total: int, unit: str = "pairs") -> str:
    """A small table of counts and shares (``data-counts`` names it)."""
    rows = "".join(f'<tr><td>{esc(k)}</td><td class="sd-n">{v}</td><td class="sd-n">{percent(v, total)}</td></tr>'
                   for k, v in counts.items())
    return (f'<table class="sd-counts" data-counts="{esc(caption)}"><tr><th>{esc(caption)}</th><th>{esc(unit)}</th>'
            f"<th>share</th></tr>{rows}</table>")


def figures(plots: Sequence[tuple[str, str]]) -> str:
    """SVG plots as figures (``data-plot`` names each) in the page's flowing plot row."""
    inner = "".join(f'<figure class="sd-plot" data-plot="{esc(name)}" style="margin:0">{svg}</figure>'
                    for name, svg in plots)
    return f'<div class="sd-plots">{inner}</div>'


def left_out_note(shown: int, total: int, how: str, noun: str = "pairs") -> str:
    """The notice that a view shows only part of a table (never cut silently); "" when nothing is left out."""
    if shown >= total:
        return ""
    return (f'<p class="sd-note" data-left-out="{total - shown}">Showing the first {shown} of {total} {esc(noun)}; '
            f"{total - shown} left out ({esc(how)}). Counts and plots cover all {total}.</p>")


def html_page(title: str, body: str) -> str:
    """A complete self-contained page around ``body`` (escaped title, our CSS, the CSP and the filter script)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>body {{ margin: 0; background: #ffffff; }} main.sd-audit {{ max-width: 1280px; margin: 0 auto; "
        f"padding: 16px 20px; }}{theme.CSS}</style></head>\n"
        f'<body><main class="sd-audit"><h1>{esc(title)}</h1>{body}</main>'
        f"<script>{FILTER_SCRIPT}</script>"
        "</body></html>\n"
    )


def made_by() -> str:
    """The page's provenance line."""
    return f"Made by stepdata {esc(__version__)}."
