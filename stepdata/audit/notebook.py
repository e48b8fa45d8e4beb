"""Notebook display of pairs: tables stay plain DataFrames, views render them.

We do not subclass DataFrame or patch its repr: pairs tables stay ordinary
pandas objects that any code can take. To look at pairs, wrap them:
``show(df)`` (a :class:`PairsView`) or ``show(df.iloc[3])`` (a
:class:`PairView`); both render each pair with the very same HTML block as the
report, so a pair looks the same alone, in a table and in the report. The
pandas accessor ``df.stepdata.show()`` / ``row.stepdata.show()`` is the same
call, registered when this package is imported.

Notebook outputs get no script (Jupyter does not run scripts of untrusted
outputs anyway); the filter lives only in the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stepdata.audit import theme
from stepdata.audit.pair_html import pair_block, row_dict
from stepdata.audit.report import left_out_note, summary_html
from stepdata.audit.summary import check_columns, summarize

# A notebook output of thousands of pairs freezes the browser; views cap by default and say so.
DEFAULT_MAX_PAIRS = 50


def _wrap(body: str) -> str:
    """Scope the shared stylesheet to this output (see :mod:`stepdata.audit.theme`)."""
    return f'<div class="sd-audit"><style>{theme.CSS}</style>{body}</div>'


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
        if max_pairs is not None and max_pairs < 0:
            raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
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


def show(data: pd.DataFrame | pd.Series | Mapping[str, Any], max_pairs: int | None = DEFAULT_MAX_PAIRS
         ) -> PairView | PairsView:
    """Display pairs in a notebook: a table gives a :class:`PairsView`, a row or dict a :class:`PairView`."""
    if isinstance(data, pd.DataFrame):
        return PairsView(data, max_pairs=max_pairs)
    return PairView(data)


class _StepdataAccessor:
    """``df.stepdata.show()`` and ``row.stepdata.show()``: the same as ``stepdata.audit.show(obj)``."""

    def __init__(self, obj: pd.DataFrame | pd.Series) -> None:
        self._obj = obj

    def show(self, max_pairs: int | None = DEFAULT_MAX_PAIRS) -> PairView | PairsView:
        return show(self._obj, max_pairs=max_pairs)

    def report(self, path: str | None = None, title: str = "stepdata pairs audit",
               max_pairs: int | None = None) -> str:
        """The HTML report of this table (written to ``path`` when given); returns the HTML."""
        from stepdata.audit.report import render_report, write_report

        if not isinstance(self._obj, pd.DataFrame):
            raise TypeError("report() needs a pairs table (DataFrame), not a single row")
        if path is not None:
            return write_report(self._obj, path, title=title, max_pairs=max_pairs).read_text(encoding="utf-8")
        return render_report(self._obj, title=title, max_pairs=max_pairs)


def register_accessors() -> None:
    """Register ``.stepdata`` on DataFrame and Series (idempotent; done on import of stepdata.audit)."""
    for register, cls in ((pd.api.extensions.register_dataframe_accessor, pd.DataFrame),
                          (pd.api.extensions.register_series_accessor, pd.Series)):
        existing = getattr(cls, "stepdata", None)
        if existing is _StepdataAccessor or getattr(existing, "_accessor", None) is _StepdataAccessor:
            continue
        register("stepdata")(_StepdataAccessor)
