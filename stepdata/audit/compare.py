"""Several localizers on the same rollouts, side by side: where they agree, and how each does against a reference.

Give it localized tables made from one rollouts table (rules, exact, a judge,
rollouts, a PRM, people's labels from ``--method human``: any localized table).
Solutions are matched by their ``rollout_id``; a solution missing from some
tables, or whose steps differ between tables (another sample run under the same
ids), is listed in :attr:`Comparison.unmatched` and left out of every number,
never dropped silently.

Each localizer's answer for a solution is its *verdict*: the first wrong step
(0-based, as in the data), -1 for "no error", or undecided (unknown, unfinished,
a failed row). Then:

- :attr:`Comparison.agreement`: for each pair of localizers, how often they put
  the first error on the same step, and how often they agree on error vs no error,
  both over the solutions both decided (and how many that is);
- :attr:`Comparison.scores`: against a reference (``exact`` on embedded problems,
  people's labels elsewhere), each localizer's precision and recall of the exact
  step (a hit is the reference's step, found), the same for error vs no error,
  and how its misses fall (too early, too late, undecided);
- :attr:`Comparison.disagreements`: the solutions on which they do not all agree,
  with who departs from the reference (or from the majority without one).

Everything is a pandas DataFrame, for a notebook; :mod:`stepdata.audit.compare_html`
draws the same as a page.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.audit.fields import as_list
from stepdata.audit.kinds import table_kind
from stepdata.audit.solution_html import statuses, verdict_label

TableLike = pd.DataFrame | str | os.PathLike


def code_label(code: int | None, status: str | None = None) -> str:
    """A verdict as people read it (see :func:`~stepdata.audit.solution_html.verdict_label`)."""
    if code is None:
        return status if status in ("unknown", "unfinished") else "undecided"
    return verdict_label("error" if code >= 0 else "no_error", code)


def localizer_name(df: pd.DataFrame, fallback: str) -> str:
    """What to call a localized table: the method its run recorded, else its rows' methods, else ``fallback``."""
    config = (df.attrs.get("stepdata") or {}).get("config") or {}
    if isinstance(config, Mapping) and config.get("method"):
        return str(config["method"])
    if "method" in df.columns:
        methods = sorted({str(m) for m in df["method"].dropna()})
        if methods:
            return "+".join(methods)
    return fallback


def _read(table: TableLike, fallback: str) -> tuple[pd.DataFrame, str]:
    if isinstance(table, pd.DataFrame):
        return table, fallback
    from stepdata.io import read_table

    path = Path(table)
    return read_table(path, kind="localized"), path.stem


# columns of Comparison.verdicts beside the localizers' own: a localizer is never named like one of them
_RESERVED = ("rollout_id", "problem_id", "all_agree", "departs", "disagreement")


def unique_names(names: list[str]) -> list[str]:
    """``names`` with a repeated one numbered ("rules", "rules (2)") and none named like a column of
    :attr:`Comparison.verdicts`."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        name = f"{name} (localizer)" if name in _RESERVED else name
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


@dataclass
class Comparison:
    """The comparison of several localized tables (see the module doc). Build it with :func:`compare_localizers`."""

    names: list[str]
    reference: str | None
    codes: pd.DataFrame  # index rollout_id; one column per localizer: verdict (Int64; <NA> = undecided)
    statuses: pd.DataFrame  # index rollout_id; one column per localizer: status
    confidence: pd.DataFrame  # index rollout_id; one column per localizer: confidence (float; NaN = none)
    problem_ids: pd.Series  # index rollout_id
    rows: dict[str, pd.DataFrame]  # the matched rows of each table, indexed by rollout_id
    unmatched: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)  # name -> where the table came from

    # -- per solution ------------------------------------------------------------------------------

    @cached_property
    def _labels(self) -> dict[str, dict[str, str]]:
        """Every verdict as text, by solution then localizer (computed once: the views ask for each many times)."""
        columns = {n: [code_label(None if pd.isna(c) else int(c), st)
                       for c, st in zip(self.codes[n].tolist(), self.statuses[n].tolist())] for n in self.names}
        return {rid: {n: columns[n][i] for n in self.names} for i, rid in enumerate(self.codes.index)}

    def label(self, name: str, rollout_id: str) -> str:
        """``name``'s verdict on a solution as text ("Step 2", "no error", "unknown", "unfinished")."""
        return self._labels[rollout_id][name]

    def departs(self, rollout_id: str) -> list[str]:
        """The localizers whose verdict differs from the reference's (without one: from the majority's;
        when no verdict has a strict majority, every localizer departs)."""
        labels = self._labels[rollout_id]
        if self.reference is not None:
            target = labels[self.reference]
            return [n for n in self.names if n != self.reference and labels[n] != target]
        counts = Counter(labels.values()).most_common()
        if len(counts) == 1:
            return []
        if counts[0][1] == counts[1][1]:
            return list(self.names)
        return [n for n in self.names if labels[n] != counts[0][0]]

    def disagreement_kind(self, rollout_id: str) -> str | None:
        """None when all agree; "undecided" when some decided and some did not, "error vs no error" when they
        differ on whether there is an error, else "step" (an error, on different steps)."""
        labels = self._labels[rollout_id]
        if len(set(labels.values())) == 1:
            return None
        if any(not (v.startswith("Step ") or v == "no error") for v in labels.values()):
            return "undecided"
        return "error vs no error" if len({v == "no error" for v in labels.values()}) > 1 else "step"

    @cached_property
    def _verdicts(self) -> pd.DataFrame:
        data: dict[str, Any] = {"rollout_id": list(self.codes.index), "problem_id": list(self.problem_ids)}
        for name in self.names:
            data[name] = [self._labels[rid][name] for rid in self.codes.index]
        data["all_agree"] = [len(set(self._labels[rid].values())) == 1 for rid in self.codes.index]
        data["departs"] = [self.departs(rid) for rid in self.codes.index]
        data["disagreement"] = [self.disagreement_kind(rid) for rid in self.codes.index]
        return pd.DataFrame(data)

    @property
    def verdicts(self) -> pd.DataFrame:
        """One row per matched solution: its problem, each localizer's verdict as text, whether they all agree,
        who departs (see :meth:`departs`) and the kind of disagreement (see :meth:`disagreement_kind`)."""
        return self._verdicts.copy()

    @property
    def disagreements(self) -> pd.DataFrame:
        """The rows of :attr:`verdicts` on which the localizers do not all agree."""
        frame = self.verdicts
        return frame[~frame["all_agree"]].reset_index(drop=True)

    # -- pairs of localizers -----------------------------------------------------------------------

    @property
    def agreement(self) -> pd.DataFrame:
        """One row per pair of localizers: over the matched solutions, how many both decided, how many of those
        they put on the same step and agree on error vs no error (and the shares), and the same status."""
        records = []
        for i, a in enumerate(self.names):
            for b in self.names[i + 1:]:
                ca, cb = self.codes[a], self.codes[b]
                both = ca.notna() & cb.notna()
                same_step = int((ca[both] == cb[both]).sum())
                same_detection = int(((ca[both] >= 0) == (cb[both] >= 0)).sum())
                same_status = int((self.statuses[a] == self.statuses[b]).sum())
                n = int(both.sum())
                records.append({"a": a, "b": b, "solutions": len(self.codes), "both_decided": n,
                                "same_step": same_step, "step_agreement": _ratio(same_step, n),
                                "same_detection": same_detection, "detection_agreement": _ratio(same_detection, n),
                                "same_status": same_status, "status_agreement": _ratio(same_status, len(self.codes))})
        return pd.DataFrame(records, columns=["a", "b", "solutions", "both_decided", "same_step", "step_agreement",
                                              "same_detection", "detection_agreement", "same_status",
                                              "status_agreement"])

    def matrix(self, measure: str = "step") -> pd.DataFrame:
        """The agreement as a square table (1.0 on the diagonal): ``measure`` is "step", "detection" or "status"."""
        column = {"step": "step_agreement", "detection": "detection_agreement", "status": "status_agreement"}.get(measure)
        if column is None:
            raise ValueError(f"measure must be 'step', 'detection' or 'status', got {measure!r}")
        square = pd.DataFrame(1.0, index=self.names, columns=self.names)
        for row in self.agreement.itertuples():
            square.at[row.a, row.b] = square.at[row.b, row.a] = getattr(row, column)
        return square

    # -- against the reference ---------------------------------------------------------------------

    @property
    def scores(self) -> pd.DataFrame:
        """Each other localizer against the reference, over the solutions the reference decided.

        ``step_precision``: of the errors it located, the share on the reference's step;
        ``step_recall``: of the reference's errors, the share it located on the same step;
        ``detect_*``: the same for error vs no error, whatever the step; ``accuracy``: the
        share whose verdict is the reference's (no error included); ``early``/``late``: an
        error before/after the reference's; ``missed``: "no error" where the reference has
        one; ``false_alarms``: an error where the reference has none; ``undecided``: no
        verdict; ``left_out``: solutions the reference did not decide. Empty without a reference.
        """
        columns = ["localizer", "compared", "reference_errors", "predicted_errors", "hits", "step_precision",
                   "step_recall", "step_f1", "detect_precision", "detect_recall", "accuracy", "early", "late",
                   "missed", "false_alarms", "undecided", "left_out"]
        if self.reference is None:
            return pd.DataFrame(columns=columns)
        ref = self.codes[self.reference]
        decided = ref.notna()
        ref = ref[decided].astype(int)
        records = []
        for name in self.names:
            if name == self.reference:
                continue
            loc = self.codes.loc[decided, name]
            has = loc.notna()
            lv = loc.fillna(-2).astype(int)
            ref_err, loc_err = ref >= 0, has & (lv >= 0)
            hits = int((loc_err & ref_err & (lv == ref)).sum())
            found = int((loc_err & ref_err).sum())
            precision, recall = _ratio(hits, int(loc_err.sum())), _ratio(hits, int(ref_err.sum()))
            records.append({
                "localizer": name, "compared": int(decided.sum()), "reference_errors": int(ref_err.sum()),
                "predicted_errors": int(loc_err.sum()), "hits": hits, "step_precision": precision,
                "step_recall": recall,
                "step_f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan"),
                "detect_precision": _ratio(found, int(loc_err.sum())), "detect_recall": _ratio(found, int(ref_err.sum())),
                "accuracy": _ratio(int((has & (lv == ref)).sum()), int(decided.sum())),
                "early": int((loc_err & ref_err & (lv < ref)).sum()), "late": int((loc_err & ref_err & (lv > ref)).sum()),
                "missed": int((has & (lv == -1) & ref_err).sum()), "false_alarms": int((loc_err & (ref == -1)).sum()),
                "undecided": int((~has).sum()), "left_out": int((~decided).sum()),
            })
        return pd.DataFrame(records, columns=columns)

    def agrees_with_reference(self, name: str) -> pd.Series:
        """Per matched solution the reference decided: whether ``name``'s verdict is the reference's."""
        if self.reference is None:
            raise ValueError("no reference was chosen")
        ref = self.codes[self.reference]
        decided = ref.notna()
        loc = self.codes.loc[decided, name]
        return (loc.notna() & (loc.fillna(-2).astype(int) == ref[decided].astype(int))).astype(bool)

    # -- display ------------------------------------------------------------------------------------

    def report(self, path: str | os.PathLike | None = None, title: str = "stepdata localizer comparison",
               max_solutions: int | None = None, problems: pd.DataFrame | None = None) -> str:
        """The comparison page (written to ``path`` when given); returns the HTML."""
        from stepdata.audit.compare_html import render_comparison
        from stepdata.io import write_text_atomic

        page = render_comparison(self, title=title, max_solutions=max_solutions, problems=problems)
        if path is not None:
            write_text_atomic(path, page)
        return page

    def _repr_html_(self) -> str:
        from stepdata.audit.compare_html import comparison_view_html

        return comparison_view_html(self)

    def __repr__(self) -> str:
        return (f"Comparison({self.names}, reference={self.reference!r}, {len(self.codes)} matched solutions, "
                f"{len(self.unmatched)} unmatched)")


def _check_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    found = table_kind(df) if df.attrs.get("stepdata") else None
    if found is not None and found.kind != "localized":
        raise ValueError(f"table {name!r} is a {found.kind} table; comparing localizers needs localized tables "
                         "(stepdata localize ROLLOUTS --method M --out FILE)")
    missing = [c for c in ("rollout_id", "problem_id", "error_step") if c not in df.columns]
    if missing:
        raise ValueError(f"table {name!r} is not a localized table: missing column(s) {missing}")
    ids = df["rollout_id"]
    if ids.isna().any():
        raise ValueError(f"table {name!r}: rollout_id is null in row {int(ids.isna().to_numpy().argmax())}")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        first = repeated.iloc[0]
        rows = [int(i) for i in (ids == first).to_numpy().nonzero()[0]]
        raise ValueError(f"table {name!r}: rollout_id {first!r} is in rows {rows}; a solution is localized once "
                         "per table")
    return df.set_index("rollout_id", drop=False)


def _steps_keys(frame: pd.DataFrame, ids: list[str]) -> list[tuple[str, ...] | None]:
    """The steps of each solution in ``ids`` as tuples (None for all when the table has no steps column)."""
    if "steps" not in frame.columns:
        return [None] * len(ids)
    return [tuple(as_list(v)) for v in frame.loc[ids, "steps"]]


def _match(frames: dict[str, pd.DataFrame], names: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The solutions in every table with the same steps everywhere (in the first table's order), and the others."""
    indexes = {n: set(frames[n].index) for n in names}
    everywhere = set.intersection(*indexes.values())
    unmatched: list[dict[str, Any]] = []
    for rid in sorted(set.union(*indexes.values()) - everywhere):
        present = [n for n in names if rid in indexes[n]]
        unmatched.append({"rollout_id": rid, "problem_id": str(frames[present[0]].at[rid, "problem_id"]),
                          "present_in": present, "missing_from": [n for n in names if n not in present],
                          "reason": "missing"})
    order = [rid for rid in frames[names[0]].index if rid in everywhere]
    keys = {n: _steps_keys(frames[n], order) for n in names}
    matched = []
    for i, rid in enumerate(order):
        first = keys[names[0]][i]
        differ = [n for n in names[1:] if keys[n][i] is not None and first is not None and keys[n][i] != first]
        if differ:
            unmatched.append({"rollout_id": rid, "problem_id": str(frames[names[0]].at[rid, "problem_id"]),
                              "present_in": list(names), "missing_from": [],
                              "reason": f"steps differ from {names[0]}'s in {', '.join(differ)}"})
        else:
            matched.append(rid)
    return matched, unmatched


def _codes(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(verdict, status) of every row: the verdict is the error step (>= 0) when the status is "error", -1 when
    it is "no_error", <NA> otherwise (undecided)."""
    status = statuses(rows)
    step = pd.to_numeric(rows["error_step"], errors="coerce")
    code = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    located = status.eq("error") & step.ge(0)
    code[located] = step[located].astype("int64")
    code[status.eq("no_error")] = -1
    return code, status


def compare_localizers(tables: Mapping[str, TableLike] | Sequence[TableLike], reference: str | None = None
                       ) -> Comparison:
    """Compare localized tables of the same rollouts (see the module doc).

    ``tables`` maps a name to a table (a DataFrame or a Parquet path), or lists tables,
    named by the method their run recorded (else their rows' methods, else their file
    name; a name taken twice gets " (2)"). ``reference`` names one of them.
    """
    if isinstance(tables, Mapping):
        given = [(_read(t, str(n))[0], str(n), str(t) if not isinstance(t, pd.DataFrame) else "DataFrame")
                 for n, t in tables.items()]
    else:
        given = []
        for i, t in enumerate(tables):
            df, fallback = _read(t, f"table {i + 1}")
            given.append((df, localizer_name(df, fallback), str(t) if not isinstance(t, pd.DataFrame) else "DataFrame"))
    if len(given) < 2:
        raise ValueError(f"comparing localizers needs at least two localized tables, got {len(given)}")
    names = unique_names([n for _, n, _ in given])
    if reference is not None and reference not in names:
        raise ValueError(f"reference {reference!r} is not one of the tables compared: {names}")
    frames = {name: _check_table(df, name) for (df, _, _), name in zip(given, names)}
    sources = {name: src for (_, _, src), name in zip(given, names)}

    matched, unmatched = _match(frames, names)
    rows = {n: frames[n].loc[matched] for n in names}
    index = pd.Index(matched, name="rollout_id")
    found = {n: _codes(rows[n]) for n in names}
    codes = pd.DataFrame({n: found[n][0].to_numpy() for n in names}, index=index).astype("Int64")
    statuses = pd.DataFrame({n: found[n][1].to_numpy() for n in names}, index=index)
    confidence = pd.DataFrame({n: pd.to_numeric(rows[n]["confidence"], errors="coerce").to_numpy()
                               if "confidence" in rows[n].columns else float("nan") for n in names},
                              index=index, dtype=float)
    problem_ids = rows[names[0]]["problem_id"].astype(str).set_axis(codes.index)
    return Comparison(names=names, reference=reference, codes=codes, statuses=statuses, confidence=confidence,
                      problem_ids=problem_ids, rows=rows,
                      unmatched=pd.DataFrame(unmatched, columns=["rollout_id", "problem_id", "present_in",
                                                                 "missing_from", "reason"]),
                      sources=sources)
