"""DPO-ST's preference pairs: whole rationales, labelled by their final answer, the least similar kept.

DPO-ST (Wang, Li and Lu, "Self-Training with Direct Preference Optimization Improves
Chain-of-Thought Reasoning", ACL 2024) makes its DPO data without any step-level
judgement: a sampled rationale whose final answer is right is a positive, one whose
answer is wrong a negative. Three choices of theirs shape the pairs, and are ours too
(the numbers are from the authors' released scripts):

- the labelled (reference) rationale of the question is a positive as well, and comes
  first, so a question the policy never solves still has a positive and a model that
  gets nothing right still gets DPO pairs;
- near duplicates are merged before pairing: a rationale whose similarity to one
  already kept is above the threshold (0.7) is left out, so ten samples that say the
  same thing do not make ten pairs that teach the same thing;
- every (positive, negative) combination is scored by the same similarity and the
  ``k`` least similar pairs are kept per question (3), the most informative contrasts.

Similarity is the Jaccard index of the two texts' sets of words (lower-cased runs of
letters and digits, and each punctuation or operator character on its own), so
"3 + 4 = 7" and "3 + 4 = 8" differ in a word. The authors compared their tokenizer's
tokens; words make the measure the same for every model.

A sample cut at ``max_tokens`` never reached its answer: it is a negative (its side gets
no end-of-sequence token in training, see :func:`stepdata.pairs.make_pair`). A sample
whose answer could not be judged (an ``error`` row) is neither, and is counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from stepdata.pairs.build import make_pair, prompt_messages_of
from stepdata.steps import strip_partial_overlap, to_step_format

_WORD = re.compile(r"\w+|[^\w\s]")

DPO_ST_THRESHOLD = 0.7  # Jaccard above which two rationales are near duplicates (DPO-ST's scripts)
DPO_ST_PAIRS_PER_QUESTION = 3  # pairs kept per question, the least similar first (DPO-ST's scripts)


def words(text: str) -> frozenset[str]:
    """The set of words of ``text`` that similarity is measured on (see the module doc)."""
    return frozenset(w.lower() for w in _WORD.findall(text))


def word_jaccard(a: str, b: str) -> float:
    """|words(a) & words(b)| / |words(a) | words(b)|; two texts without words are the same (1.0)."""
    left, right = words(a), words(b)
    union = left | right
    return len(left & right) / len(union) if union else 1.0


@dataclass(frozen=True)
class Rationale:
    """A rationale as the model writes it after the prompt's partial answer.

    ``origin`` says where it came from ("reference" or a rollout id); ``finished`` is False
    for a sample cut at ``max_tokens``.
    """

    text: str
    origin: str
    finished: bool = True
    model: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.origin == "reference"


def merge_near_duplicates(rationales: Sequence[Rationale], threshold: float) -> list[Rationale]:
    """The rationales in order, each left out when it repeats one already kept: the same text, or a word
    Jaccard similarity above ``threshold``. The first of a group stays (the reference, when it leads)."""
    kept: list[Rationale] = []
    seen: set[str] = set()
    for rationale in rationales:
        if rationale.text in seen:
            continue
        if any(word_jaccard(rationale.text, other.text) > threshold for other in kept):
            continue
        kept.append(rationale)
        seen.add(rationale.text)
    return kept


@dataclass(frozen=True)
class ScoredPair:
    """A (positive, negative) pair and the word Jaccard similarity it was ranked by."""

    chosen: Rationale
    rejected: Rationale
    similarity: float


def least_similar_pairs(positives: Sequence[Rationale], negatives: Sequence[Rationale], k: int) -> list[ScoredPair]:
    """The ``k`` least similar (positive, negative) combinations; ties go to the earlier positive, then negative."""
    scored = [(word_jaccard(p.text, n.text), i, j) for i, p in enumerate(positives) for j, n in enumerate(negatives)]
    scored.sort()
    return [ScoredPair(positives[i], negatives[j], round(s, 6)) for s, i, j in scored[:k]]


def reference_rationale(solution: Any, answer: Any, partial: str) -> str | None:
    """A problem's reference solution as the model would write it after the template's partial answer
    (our step format, the partial answer's own start removed); None when the problem has none."""
    if not isinstance(solution, str) or not solution.strip():
        return None
    text = strip_partial_overlap(partial, to_step_format(solution, answer if isinstance(answer, str) else None))
    return text if text.strip() else None


@dataclass
class PoolCounts:
    """What one question's rationales came to, for the stage's statistics."""

    positives: int = 0
    negatives: int = 0
    unjudged: int = 0
    empty: int = 0


def labelled_rationales(rollouts: Iterable[pd.DataFrame]) -> dict[str, tuple[list[Rationale], list[Rationale],
                                                                            PoolCounts]]:
    """Per problem, (positives, negatives, counts) from rollouts tables (earlier tables first, rows in order).

    Right answers are positives, wrong ones (unfinished included) negatives; a row with an
    ``error`` or no judgement is counted as unjudged, an empty completion as empty.
    """
    pools: dict[str, tuple[list[Rationale], list[Rationale], PoolCounts]] = {}
    for table in rollouts:
        for row in table.itertuples(index=False):
            positives, negatives, counts = pools.setdefault(str(row.problem_id), ([], [], PoolCounts()))
            if isinstance(row.error, str) or row.correct is None or pd.isna(row.correct):
                counts.unjudged += 1
                continue
            text = row.completion if isinstance(row.completion, str) else ""
            if not text.strip():
                counts.empty += 1
                continue
            rationale = Rationale(text, str(row.rollout_id), finished=row.finish_reason != "length",
                                  model=row.model if isinstance(row.model, str) else None)
            (positives if bool(row.correct) else negatives).append(rationale)
    for positives, negatives, counts in pools.values():
        counts.positives, counts.negatives = len(positives), len(negatives)
    return pools


@dataclass
class PairSelection:
    """The settings of DPO-ST's pair selection."""

    pairs_per_question: int = DPO_ST_PAIRS_PER_QUESTION
    threshold: float = DPO_ST_THRESHOLD
    reference_positive: bool = True

    def __post_init__(self) -> None:
        if self.pairs_per_question < 1:
            raise ValueError(f"pairs_per_question must be >= 1, got {self.pairs_per_question}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def select(self, reference: str | None, positives: Sequence[Rationale],
               negatives: Sequence[Rationale]) -> list[ScoredPair]:
        """One question's pairs: the reference first among the positives, near duplicates merged on each
        side, then the least similar combinations."""
        lead = [Rationale(reference, "reference")] if reference is not None and self.reference_positive else []
        kept_positives = merge_near_duplicates([*lead, *positives], self.threshold)
        kept_negatives = merge_near_duplicates(negatives, self.threshold)
        return least_similar_pairs(kept_positives, kept_negatives, self.pairs_per_question)

    def pairs_table(self, problems: pd.DataFrame, rollouts: Iterable[pd.DataFrame],
                    template: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """DPO pairs (kind ``dpo``, whole rationales, empty prefix) for every problem, and what was counted.

        ``template`` is the prompt template the rollouts were sampled with (its chat is the pairs'
        prompt). Problems keep the order of ``problems``; a problem with no rollouts can still pair
        its reference with nothing, so it has none.
        """
        pools = labelled_rationales(rollouts)
        partial = template.render(question="")[-1]["content"] if template.continues_assistant else ""
        rows: list[dict[str, Any]] = []
        outcome = {"with_pairs": 0, "no_negative": 0, "no_positive": 0, "no_samples": 0}
        totals = PoolCounts()
        reference_chosen = 0
        for problem in problems.itertuples(index=False):
            pid = str(problem.problem_id)
            if pid not in pools:
                outcome["no_samples"] += 1
                continue
            positives, negatives, counts = pools[pid]
            for name in ("positives", "negatives", "unjudged", "empty"):
                setattr(totals, name, getattr(totals, name) + getattr(counts, name))
            reference = reference_rationale(problem.solution, problem.answer, partial)
            chosen = self.select(reference, positives, negatives)
            if not chosen:
                has_positive = bool(positives) or (reference is not None and self.reference_positive)
                outcome["no_negative" if has_positive else "no_positive"] += 1
                continue
            outcome["with_pairs"] += 1
            messages = prompt_messages_of(template.render(question=problem.question))
            for pair in chosen:
                reference_chosen += pair.chosen.is_reference
                rows.append(make_pair(
                    problem_id=pid, question=problem.question, answer=problem.answer, prompt_messages=messages,
                    prefix_steps=[], chosen=pair.chosen.text, rejected=pair.rejected.text, kind="dpo",
                    error_step=None, source=problem.source, chosen_verified=None,
                    model=pair.rejected.model, localizer="final-answer",
                    sampling={"selection": "dpo-st", "similarity": pair.similarity, "chosen": pair.chosen.origin,
                              "rejected": pair.rejected.origin, "threshold": self.threshold},
                    chosen_finished=pair.chosen.finished, rejected_finished=pair.rejected.finished))
        from stepdata.schema import PAIRS

        table = pd.DataFrame(rows, columns=PAIRS.names)
        stats = {"pairs": len(table), "questions": len(problems), **outcome,
                 "reference_chosen": reference_chosen,
                 "rationales": {"positives": totals.positives, "negatives": totals.negatives,
                                "unjudged": totals.unjudged, "empty": totals.empty},
                 "mean_similarity": round(float(_similarities(table).mean()), 4) if len(table) else None}
        return table, stats


def _similarities(pairs: pd.DataFrame) -> pd.Series:
    """The similarity each DPO-ST pair was ranked by (kept in its provenance's sampling record)."""
    return pairs["provenance"].map(lambda p: json.loads(p["sampling"])["similarity"])


def pair_origins(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    """(chosen origin, rejected origin) of each DPO-ST pair: "reference" or the rollout id it came from."""
    records: list[Mapping[str, Any]] = [json.loads(p["sampling"]) for p in pairs["provenance"]]
    return [(r["chosen"], r["rejected"]) for r in records]
