"""Step-DPO pairs from people's corrections: the step a person wrote against the policy's wrong step.

A row localized by the ``human`` method (:mod:`stepdata.localize.human`) whose label gives
the first wrong step k and a corrected step becomes one ``step-dpo`` pair, shaped as
rectify's are: the same prompt (the template the rollout was sampled with) and prefix
(the rollout's steps before k); rejected = the policy's step k (followed in
``rejected_full`` by the rest of its solution); chosen = the person's text. Since the
policy did not write chosen, the pair is out of distribution, and says so:
``chosen_source = "human"`` (:data:`stepdata.schema.CHOSEN_SOURCES`), ``provenance.localizer
= "human"``, and its ``provenance.sampling`` records the annotator, the time and the label's
place beside the rollout's sampling.

People make mistakes too: each chosen step is checked as the pair stages' default check
(``--verify auto``) checks theirs (:func:`stepdata.localize.exact.verify_step`: against the
gold steps of an embedded problem, else by its arithmetic claims; None when it states none),
so ``export`` and the trainers leave out a correction that fails it.

The person's text is fitted to the frame of the step it replaces (:func:`fit_to_step`): the
step's "Step k:" marker and the whitespace around it are the rejected step's, whether or not
the person typed them, so the pair differs only in what the step says. A person writes no
continuation, so nothing follows chosen: it ends its solution (gets EOS in training) only
when it states the final answer in an explicit form (``\\boxed{}``, "The answer is ...").

Every localized row gets an outcome (:data:`CORRECTION_OUTCOMES`), counted in the summary
with the ids of the rows that gave no pair; nothing is dropped unremarked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.answers import extract_answer
from stepdata.localize.exact import verify_step
from stepdata.localize.human import human_evidence
from stepdata.pairs.build import make_pair, prompt_messages_of
from stepdata.schema import PAIRS
from stepdata.steps import STEP_MARKER, join_steps, normalized_step, step_body

CORRECTION_OUTCOMES: dict[str, str] = {
    "pair": "a pair was made",
    "not_human": "the row was not localized by the human method",
    "no_error_step": "the person gave no first wrong step (no error, can't tell, or no label)",
    "no_corrected_step": "the person marked the first wrong step but wrote no correction",
    "unknown_problem": "the row's problem_id is not in the problems table",
    "step_out_of_range": "the error step is past the solution's last step",
    "several_steps": "the correction holds more than one step (a Step-DPO pair replaces one)",
    "same_as_rejected": "the corrected step reads as the wrong step does",
    "duplicate_pair": "another row gave the same pair",
}


def fit_to_step(corrected: str, rejected: str) -> str:
    """``corrected`` in the frame of ``rejected``: the rejected step's marker and surrounding whitespace around the
    corrected text's content (its own marker, if typed, replaced)."""
    body = step_body(rejected)
    if body:
        at = rejected.find(body)
        lead, trail = rejected[:at], rejected[at + len(body):]
    else:  # a step that is only its marker
        lead = rejected.rstrip() + " " if rejected.strip() else rejected
        trail = rejected[len(rejected.rstrip()):] if rejected.strip() else ""
    return lead + step_body(corrected) + trail


def _several_steps(text: str) -> bool:
    """Whether a person's text holds more than one step: a second "Step k:" marker after its start."""
    markers = list(STEP_MARKER.finditer(text.strip()))
    return len(markers) > 1 or (len(markers) == 1 and markers[0].start() > 0)


def _cell(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def correction_pairs(localized: pd.DataFrame, problems: pd.DataFrame, template: str = "step_by_step"
                     ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The pairs of people's corrections in ``localized`` (module doc), and a summary of every row's outcome."""
    from stepdata.prompts import load_prompt

    prompt = load_prompt(template)
    index = problems if problems.index.name == "problem_id" else problems.drop_duplicates("problem_id").set_index("problem_id")
    rows: list[dict[str, Any]] = []
    outcomes: dict[str, list[str]] = {name: [] for name in CORRECTION_OUTCOMES}
    seen: set[str] = set()
    for row in localized.to_dict("records"):
        rollout = str(row["rollout_id"])
        outcome, pair = _pair_of(row, index, prompt)
        if pair is not None and pair["pair_id"] in seen:
            outcome, pair = "duplicate_pair", None
        outcomes[outcome].append(rollout)
        if pair is not None:
            seen.add(pair["pair_id"])
            rows.append(pair)
    counts = {name: len(ids) for name, ids in outcomes.items() if ids}
    verified = pd.Series([pair["chosen_verified"] for pair in rows], dtype=object)
    summary = {"rows": len(localized), "pairs": len(rows), "outcomes": counts, "template": template,
               "chosen_verified": {"true": int(verified.eq(True).sum()), "false": int(verified.eq(False).sum()),
                                   "unchecked": int(verified.isna().sum())},
               "no_pair_ids": {name: ids for name, ids in outcomes.items() if ids and name != "pair"}}
    return pd.DataFrame(rows, columns=PAIRS.names), summary


def _pair_of(row: dict[str, Any], problems: pd.DataFrame, prompt: Any) -> tuple[str, dict[str, Any] | None]:
    """(outcome, pair or None) for one localized row."""
    if row.get("method") != "human":
        return "not_human", None
    evidence = human_evidence(row.get("rationale"))
    k = _cell(row.get("error_step"))
    if evidence is None or row.get("status") != "error" or k is None or int(k) < 0:
        return "no_error_step", None
    corrected = evidence.get("corrected_step")
    if not isinstance(corrected, str) or not corrected.strip():
        return "no_corrected_step", None
    if row["problem_id"] not in problems.index:
        return "unknown_problem", None
    steps, k = list(row.get("steps") or []), int(k)
    if k >= len(steps):
        return "step_out_of_range", None
    if _several_steps(corrected):
        return "several_steps", None
    chosen = fit_to_step(corrected, steps[k])
    if normalized_step(chosen) == normalized_step(steps[k]):
        return "same_as_rejected", None
    problem = problems.loc[row["problem_id"]]
    sampling = _cell(row.get("sampling"))
    states_answer = extract_answer(chosen, last_number_fallback=False) is not None
    pair = make_pair(
        problem_id=str(row["problem_id"]), question=problem["question"], answer=_cell(problem.get("answer")),
        prompt_messages=prompt_messages_of(prompt.render(question=problem["question"])),
        prefix_steps=steps[:k], chosen=chosen, rejected=steps[k], chosen_rest="",
        rejected_rest=join_steps(steps[k + 1:]), kind="step-dpo", error_step=k, source=_cell(problem.get("source")),
        chosen_verified=verify_step(chosen, k, _cell(problem.get("meta"))), chosen_source="human", model=_cell(row.get("model")), localizer="human",
        sampling={"chosen": {"annotator": evidence.get("annotator"), "time": evidence.get("time"),
                             "labels": evidence.get("labels")},
                  "rejected": dict(sampling) if isinstance(sampling, dict) else None},
        chosen_finished=states_answer, rejected_finished=_cell(row.get("finish_reason")) != "length",
    )
    return "pair", pair


def write_correction_pairs(localized_path: str | os.PathLike, out: str | os.PathLike, problems: pd.DataFrame,
                           template: str = "step_by_step", lineage: dict[str, Any] | None = None
                           ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the localized table at ``localized_path``, write its correction pairs to ``out`` (a pairs table) and
    ``OUT.summary.json``; returns both."""
    from stepdata.io import read_table, write_table, write_text_atomic

    localized = read_table(localized_path, kind="localized")
    pairs, summary = correction_pairs(localized, problems, template)
    summary = {"source": str(localized_path), "output": str(out)} | summary
    config = {"stage": "from-corrections", "source": str(Path(localized_path).resolve()), "template": template,
              **({"lineage": lineage} if lineage else {})}
    write_table(pairs, out, "pairs", config=config)
    write_text_atomic(f"{out}.summary.json", json.dumps(summary, indent=1, ensure_ascii=False))
    return pairs, summary
