"""Audit views of pairs, rollouts and localized tables: HTML reports, notebook displays, localizer comparison.

A pair is only worth training on if a person can check it, and a localizer only
worth running if a person can check where it puts the first error. Everything
here renders one row with one HTML block (:func:`pair_block` for a pair,
:func:`solution_block` for a rollout or a localized rollout), so the standalone
report (:func:`render_report`, ``stepdata audit``) and the notebook views
(:func:`show`) look the same. :func:`compare_localizers` sets several localized
tables of the same rollouts side by side (agreement, precision and recall against
a reference, the disagreements), as DataFrames and as a page
(``stepdata compare-localizers``). All model and data-set text is escaped.

Importing this package registers the pandas accessor ``.stepdata``
(``df.stepdata.show()``).
"""

from stepdata.audit.compare import Comparison, compare_localizers
from stepdata.audit.evidence import Evidence, read_evidence
from stepdata.audit.kinds import TableKind, table_kind
from stepdata.audit.notebook import (
    PairsView,
    PairView,
    SolutionsView,
    SolutionView,
    register_accessors,
    show,
)
from stepdata.audit.pair_html import esc, pair_block
from stepdata.audit.report import render_report, write_report
from stepdata.audit.solution_html import solution_block
from stepdata.audit.summary import PairsSummary, summarize

register_accessors()

__all__ = [
    "Comparison",
    "Evidence",
    "PairView",
    "PairsSummary",
    "PairsView",
    "SolutionView",
    "SolutionsView",
    "TableKind",
    "compare_localizers",
    "esc",
    "pair_block",
    "read_evidence",
    "render_report",
    "show",
    "solution_block",
    "summarize",
    "table_kind",
    "write_report",
]
