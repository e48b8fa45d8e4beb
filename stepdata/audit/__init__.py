"""Audit views of a pairs table: an HTML report and notebook displays.

A pair is only worth training on if a person can check it: the question, the
shared prefix, and the wrong step next to its replacement. Everything here
renders pairs with one per-pair HTML block (:func:`pair_block`), so the
standalone report (:func:`render_report`, ``stepdata audit``) and the notebook
views (:func:`show`) look the same. All model and data-set text is escaped.

Importing this package registers the pandas accessor ``.stepdata``
(``df.stepdata.show()``).
"""

from stepdata.audit.notebook import PairsView, PairView, register_accessors, show
from stepdata.audit.pair_html import esc, pair_block
from stepdata.audit.report import render_report, write_report
from stepdata.audit.summary import PairsSummary, summarize

register_accessors()

__all__ = [
    "PairView",
    "PairsSummary",
    "PairsView",
    "esc",
    "pair_block",
    "render_report",
    "show",
    "summarize",
    "write_report",
]
