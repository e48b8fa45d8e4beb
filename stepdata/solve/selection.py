"""Which of several attempts best-of-n gives: by majority vote of the answers, or by the verifier's score.

Pure functions over answers and scores, so the stage and an offline re-selection (the first k of n
attempts, another verifier: :mod:`stepdata.solve.rescore`) choose the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from stepdata.evaluate import vote_key


def majority_pick(answers: Sequence[str | None]) -> int:
    """The first attempt giving the most common answer (answers equal as plain numbers vote together);
    ties go to the answer seen first, and no answer at all picks attempt 0."""
    votes: Counter[Any] = Counter()
    first: dict[Any, int] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            votes[vote_key(answer)] += 1
            first.setdefault(vote_key(answer), i)
    if not votes:
        return 0
    return first[max(votes, key=lambda key: (votes[key], -first[key]))]


def verifier_pick(ranks: Sequence[float], answers: Sequence[str | None]) -> int:
    """The attempt the verifier ranks highest; ties go to one with an answer, then to the first."""
    return max(range(len(ranks)), key=lambda i: (ranks[i], answers[i] is not None, -i))
