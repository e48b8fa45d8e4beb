"""Notebook display of pairs, rollouts and localized tables: tables stay plain DataFrames, views render them.

We do not subclass DataFrame or patch its repr: tables stay ordinary pandas
objects that any code can take. To look at one, wrap it: ``show(df)`` renders
a pairs table (a :class:`PairsView`) or a rollouts or localized table (a
:class:`SolutionsView`), its kind read from ``df.attrs`` as :func:`stepdata.read_table`
sets it, else from its columns (and the view says so); ``show(df.iloc[3])``
renders one row (a :class:`PairView` or a :class:`SolutionView`). Each row is
rendered with the very same HTML block as the report, so a pair or a solution
looks the same alone, in a table and in the report. The pandas accessor
``df.stepdata.show()`` / ``row.stepdata.show()`` is the same call, registered
when this package is imported. A :class:`~stepdata.audit.compare.Comparison`
renders itself.

Notebook outputs get no script (Jupyter does not run scripts of untrusted
outputs anyway); the filters live only in the report pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stepdata.audit import theme
from stepdata.audit.kinds import row_kind, table_kind
from stepdata.audit.page import left_out_note
from stepdata.audit.pair_html import esc, pair_block, row_dict
from stepdata.audit.report import summary_html
from stepdata.audit.solutions import summarize_solutions
from stepdata.audit.solutions_report import problems_index, solution_blocks
from stepdata.audit.solutions_report import summary_html as solutions_summary_html
from stepdata.audit.summary import check_columns, summarize

# A notebook output of thousands of rows freezes the browser; views cap by default and say so.
DEFAULT_MAX_PAIRS = 50
DEFAULT_MAX_ROWS = DEFAULT_MAX_PAIRS
_UNSET: Any = object()


def _wrap(body: str) -> str:
    """Scope the shared stylesheet to this output (see :mod:`stepdata.audit.theme`)."""
    return f'<div class="sd-audit"><style>{theme.CSS}</style>{body}</div>'


def _check_cap(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {value}")


class PairView:
    """One pair (a row: Series, dict or one-row DataFrame) that renders as HTML in Jupyter."""

    def __init__(self, row: Any) -> None:
        self.row: dict[str, Any] = row_dict(row)
        missing = [c for c in ("pair_id", "question", "chosen", "rejected") if c not in self.row]
        if missing:
            raise ValueError(f"not a pair: missing field(s) {missing}")

    def block_html(self) -> str:
        """The pair's block, exactly as the report and :class:`PairsView` render it."""
        return pair_block(self.row)

    def _repr_html_(self) -> str:
        return _wrap(self.block_html())

    def __repr__(self) -> str:
        return f"PairView(pair_id={self.row.get('pair_id')!r}, kind={self.row.get('kind')!r})"


class PairsView:
    """A pairs table that renders in Jupyter as its summary numbers and its pairs (capped at ``max_pairs``)."""

    def __init__(self, df: pd.DataFrame, max_pairs: int | None = DEFAULT_MAX_PAIRS) -> None:
        check_columns(df)
        _check_cap("max_pairs", max_pairs)
        self.df = df
        self.max_pairs = max_pairs

    def block_htmls(self) -> list[str]:
        """The blocks of the pairs shown, in table order."""
        shown = self.df if self.max_pairs is None else self.df.head(self.max_pairs)
        return [pair_block(row) for row in shown.to_dict("records")]

    def _repr_html_(self) -> str:
        blocks = self.block_htmls()
        note = left_out_note(len(blocks), len(self.df),
                             f"max_pairs={self.max_pairs}; pass max_pairs=None or slice the table to see others")
        return _wrap(f"{summary_html(summarize(self.df))}{note}{''.join(blocks)}{note}")

    def __repr__(self) -> str:
        return f"PairsView({len(self.df)} pairs, max_pairs={self.max_pairs})"

    def __len__(self) -> int:
        return len(self.df)


class SolutionView:
    """One rollout or localized row that renders as HTML in Jupyter (its steps, outcome and evidence).

    ``problem`` (a problems-table row) adds the question and the gold answer.
    """

    def __init__(self, row: Any, problem: Mapping[str, Any] | None = None) -> None:
        self.row: dict[str, Any] = row_dict(row)
        self.kind = row_kind(self.row)
        if self.kind == "pairs":
            raise ValueError("this row is a pair; show it with PairView")
        self.problem = dict(problem) if problem is not None else None

    def block_html(self) -> str:
        """The solution's block, exactly as the report and :class:`SolutionsView` render it."""
        return solution_blocks(pd.DataFrame([self.row]), self.kind,
                               {str(self.row.get("problem_id")): self.problem} if self.problem else None)[0]

    def _repr_html_(self) -> str:
        return _wrap(self.block_html())

    def __repr__(self) -> str:
        return f"SolutionView(rollout_id={self.row.get('rollout_id')!r}, kind={self.kind!r})"


class SolutionsView:
    """A rollouts or localized table that renders in Jupyter as its numbers and its solutions (capped).

    ``kind`` overrides the table's recorded kind; ``problems`` adds each solution's question and gold answer.
    """

    def __init__(self, df: pd.DataFrame, max_solutions: int | None = DEFAULT_MAX_ROWS, kind: str | None = None,
                 problems: pd.DataFrame | None = None) -> None:
        self.found = table_kind(df, kind)
        if self.found.kind == "pairs":
            raise ValueError("a pairs table: show it with PairsView")
        _check_cap("max_solutions", max_solutions)
        self.df, self.max_solutions = df, max_solutions
        self.problems = problems_index(problems)

    @property
    def kind(self) -> str:
        return self.found.kind

    def block_htmls(self) -> list[str]:
        """The blocks of the solutions shown, in table order."""
        shown = self.df if self.max_solutions is None else self.df.head(self.max_solutions)
        return solution_blocks(shown, self.kind, self.problems)

    def _repr_html_(self) -> str:
        blocks = self.block_htmls()
        note = left_out_note(len(blocks), len(self.df), f"max_rows={self.max_solutions}; pass max_rows=None or "
                             "slice the table to see others", "solutions")
        guessed = f'<p class="sd-note" data-kind-source="columns">{esc(self.found.note)}</p>' if self.found.note else ""
        head = f'<p class="sd-muted" data-kind="{esc(self.kind)}">A {esc(self.kind)} table; steps numbered from 1.</p>'
        return _wrap(f"{head}{guessed}{solutions_summary_html(summarize_solutions(self.df, self.kind))}"
                     f"{note}{''.join(blocks)}{note}")

    def __repr__(self) -> str:
        return f"SolutionsView({len(self.df)} {self.kind} rows, max_solutions={self.max_solutions})"

    def __len__(self) -> int:
        return len(self.df)


View = PairView | PairsView | SolutionView | SolutionsView


def show(data: Any, max_rows: int | None = DEFAULT_MAX_ROWS, *, max_pairs: int | None = _UNSET,
         kind: str | None = None, problems: pd.DataFrame | None = None) -> Any:
    """Display a table or a row in a notebook (see the module doc).

    A pairs table gives a :class:`PairsView`, a rollouts or localized table a
    :class:`SolutionsView` (``kind`` overrides what the table records; ``problems``
    adds questions and gold answers), a row or dict the matching single view; at most
    ``max_rows`` rows are rendered (``max_pairs`` is the same, its older name). A
    :class:`~stepdata.audit.compare.Comparison` is returned as it is (it renders itself).
    """
    from stepdata.audit.compare import Comparison

    cap = max_rows if max_pairs is _UNSET else max_pairs
    if isinstance(data, Comparison):
        return data
    if isinstance(data, pd.DataFrame):
        found = table_kind(data, kind)
        if found.kind == "pairs":
            return PairsView(data, max_pairs=cap)
        return SolutionsView(data, max_solutions=cap, kind=kind, problems=problems)
    row = row_dict(data)
    if row_kind(row) == "pairs":
        return PairView(row)
    index = problems_index(problems)
    return SolutionView(row, index.get(str(row.get("problem_id"))))


class _StepdataAccessor:
    """``df.stepdata.show()`` and ``row.stepdata.show()``: the same as ``stepdata.audit.show(obj)``."""

    def __init__(self, obj: pd.DataFrame | pd.Series) -> None:
        self._obj = obj

    def show(self, max_rows: int | None = DEFAULT_MAX_ROWS, *, max_pairs: int | None = _UNSET,
             kind: str | None = None, problems: pd.DataFrame | None = None) -> Any:
        return show(self._obj, max_rows, max_pairs=max_pairs, kind=kind, problems=problems)

    def report(self, path: str | None = None, title: str | None = None, max_pairs: int | None = None,
               kind: str | None = None, problems: pd.DataFrame | None = None) -> str:
        """The HTML report of this table (written to ``path`` when given); returns the HTML."""
        from stepdata.audit.report import render_report, write_report

        if not isinstance(self._obj, pd.DataFrame):
            raise TypeError("report() needs a table (DataFrame), not a single row")
        if path is not None:
            return write_report(self._obj, path, title=title, max_pairs=max_pairs, kind=kind,
                                problems=problems).read_text(encoding="utf-8")
        return render_report(self._obj, title=title, max_pairs=max_pairs, kind=kind, problems=problems)


def register_accessors() -> None:
    """Register ``.stepdata`` on DataFrame and Series (idempotent; done on import of stepdata.audit)."""
    for register, cls in ((pd.api.extensions.register_dataframe_accessor, pd.DataFrame),
                          (pd.api.extensions.register_series_accessor, pd.Series)):
        existing = getattr(cls, "stepdata", None)
        if existing is _StepdataAccessor or getattr(existing, "_accessor", None) is _StepdataAccessor:
            continue
        register("stepdata")(_StepdataAccessor)
