"""A localized row's evidence, read back from its ``rationale`` for display.

Each localizer leaves its evidence in the ``rationale`` column in its own form
(:attr:`stepdata.localize.base.Localization.rationale`): the judge and a PRM
write their evidence as JSON (votes and every raw reply; every step's score and
the threshold), the rules and the exact checker write one line naming the false
claim (``step 1: '40 + 9 = 59' is false (49 != 59)``), the rollouts localizer one
line of MC values (``MC estimates (prefix 0: 1.00, prefix 2: 0.00)``). An audit
wants these as things to draw (the claim beside its step, the votes, a bar per
score), so this module reads each form back into one :class:`Evidence`.

Reading never fails: text it does not recognise (a plugin's, a human
annotator's note) is kept as text and shown as it is. Everything read here is
data to display, never code: JSON is parsed with ``json.loads`` and numbers
with ``float``/``int``, nothing else. The tests produce each form with the real
localizers, so a changed format fails them rather than this reader.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stepdata.audit import fields
from stepdata.steps import step_label

# rules and exact: "step 3: '4 * 5 = 21' is false (20 != 21)", possibly followed by "; cut at max_tokens"
_FALSE_CLAIM = re.compile(r"^step (\d+): '(.*)' is false \((.*?)\)(;.*)?$", re.DOTALL)
# exact's other findings name a step too: "step 1: arrives at 43, gold step arrives at 49"
_STEP_NOTE = re.compile(r"^step (\d+): (.*)$", re.DOTALL)
# rollouts: "MC estimates (prefix 0: 1.00, prefix 2: 0.00); ..."
_MC = re.compile(r"^MC estimates \(([^)]*)\)(.*)$", re.DOTALL)
_MC_VALUE = re.compile(r"prefix (\d+): ([0-9.]+)")


@dataclass
class Evidence:
    """What a localizer said about one solution, in drawable parts.

    ``form`` says which parts are filled: "claim" (a false arithmetic claim: ``claim``,
    ``detail``, ``step``), "check" (a step-level note: ``step``, ``detail``), "judge"
    (``votes``, ``replies``, ``unreadable``), "mc" (``mc``: the MC value of every probed
    prefix, prefix i being the first i steps), "prm" (``step_scores``, ``threshold``),
    "json" (other JSON: ``data``), "text" (anything else) or "none" (no rationale).
    ``summary`` is one line for people, with steps counted from 1.
    """

    form: str
    summary: str = ""
    step: int | None = None  # 0-based step the evidence names
    claim: str | None = None
    detail: str | None = None
    votes: list[int] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    unreadable: int = 0
    mc: dict[int, float] = field(default_factory=dict)
    step_scores: list[float] = field(default_factory=list)
    threshold: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None


def _floats(values: Any) -> list[float] | None:
    """A list of numbers from JSON, or None when it is not one (a NaN stays NaN: shown, not dropped)."""
    if not isinstance(values, list):
        return None
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        out.append(float(value))
    return out


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)] if isinstance(values, list) else []


def _from_json(data: dict[str, Any], raw: str) -> Evidence:
    if "votes" in data and "unreadable" in data:  # the judge (stepdata.localize.judge.JudgeVerdict.evidence)
        replies = [str(r) for r in data.get("replies") or [] if r is not None]
        unreadable = fields.as_int(data.get("unreadable")) or 0
        votes = _ints(data["votes"])
        error = data.get("error")
        return Evidence("judge", summary=_judge_summary(votes, unreadable) + (f"; {error}" if error else ""),
                        votes=votes, replies=replies, unreadable=unreadable, data=data, raw=raw)
    scores = _floats(data.get("step_scores"))
    if "step_scores" in data and (scores is not None or data.get("step_scores") is None):  # a PRM
        threshold = data.get("threshold")
        return Evidence("prm", summary=str(data.get("summary") or ""), step_scores=scores or [],
                        threshold=float(threshold) if isinstance(threshold, (int, float)) else None, data=data, raw=raw)
    if isinstance(data.get("mc"), dict):  # a rollouts evidence stored whole
        mc = {}
        for key, value in data["mc"].items():
            try:
                mc[int(key)] = float(value)
            except (TypeError, ValueError):
                continue
        return Evidence("mc", summary=_mc_summary(mc), mc=mc, data=data, raw=raw)
    return Evidence("json", summary=str(data.get("summary") or data.get("check") or ""), data=data, raw=raw)


def vote_label(vote: int) -> str:
    """A judge's vote as people read it: "Step k+1", or "no error" for -1."""
    return "no error" if vote < 0 else step_label(vote)


def _judge_summary(votes: list[int], unreadable: int) -> str:
    counts = Counter(votes)
    listed = ", ".join(f"{vote_label(v)} \u00d7{n}" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    plural = "reply" if unreadable == 1 else "replies"
    return f"votes: {listed or 'none readable'}; {unreadable} unreadable {plural}"


def _mc_summary(mc: dict[int, float]) -> str:
    values = ", ".join(f"{'question alone' if i == 0 else f'after {step_label(i - 1)}'}: {v:.2f}"
                       for i, v in sorted(mc.items()))
    return f"MC value of each probed prefix ({values})"


def read_evidence(rationale: Any) -> Evidence:
    """The evidence in a localized row's ``rationale`` (see the module doc); never raises."""
    if fields.is_missing(rationale) or not str(rationale).strip():
        return Evidence("none")
    raw = str(rationale)
    text = raw.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return _from_json(data, raw)
    claim = _FALSE_CLAIM.match(text)
    if claim:
        step = int(claim.group(1))
        rest = claim.group(4) or ""
        return Evidence("claim", summary=f"{step_label(step)}: '{claim.group(2)}' is false ({claim.group(3)}){rest}",
                        step=step, claim=claim.group(2), detail=claim.group(3), raw=raw)
    note = _STEP_NOTE.match(text)
    if note:
        step = int(note.group(1))
        return Evidence("check", summary=f"{step_label(step)}: {note.group(2)}", step=step, detail=note.group(2),
                        raw=raw)
    mc = _MC.match(text)
    if mc:
        values = {int(i): float(v) for i, v in _MC_VALUE.findall(mc.group(1)) if _is_number(v)}
        more = mc.group(2).strip("; ")
        return Evidence("mc", summary=_mc_summary(values) + (f"; {more}" if more else ""), mc=values, raw=raw)
    return Evidence("text", summary=text, raw=raw)  # a note of unknown form: its numbers are left as written


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
