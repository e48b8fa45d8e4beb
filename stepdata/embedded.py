"""Our own multi-step arithmetic word problems, so a fresh clone runs end to end.

Each problem follows one person's collection of things through 2 to 6 steps
(buying, giving away, scaling, sharing into groups). Every step of the gold
solution states exactly one claim ``a op b = c`` on whole numbers, so any step a
model writes for these problems can be checked exactly: the first wrong step of
a model's solution is known, not estimated.

Problems are generated independently per index from ``(seed, index)``, so the
first k problems of a larger set are the same k problems of a smaller one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from stepdata.schema import PROBLEMS

GENERATOR = "stepdata-arith-v1"

_NAMES = [
    "Ada", "Bram", "Chidi", "Dara", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kavya", "Lior", "Mira", "Nuno", "Oona", "Pavel", "Quinn", "Rosa", "Soren", "Tala",
]
_FRIENDS = ["a neighbour", "a cousin", "a classmate", "the school fair", "a friend", "the library"]
# (things, one container, several containers)
_THEMES = [
    ("marbles", "bag", "bags"),
    ("stickers", "sheet", "sheets"),
    ("pencils", "box", "boxes"),
    ("cookies", "tray", "trays"),
    ("stamps", "album", "albums"),
    ("seed packets", "crate", "crates"),
    ("beads", "jar", "jars"),
    ("postcards", "folder", "folders"),
    ("tomatoes", "basket", "baskets"),
    ("bolts", "tin", "tins"),
]
MAX_VALUE = 5000


@dataclass
class _Story:
    rng: random.Random
    name: str
    things: str
    container: str
    containers: str
    amount: int
    sentences: list[str] = field(default_factory=list)
    steps: list[tuple[str, str, int]] = field(default_factory=list)  # (explanation, expression, value)

    def claim(self, explanation: str, expression: str, value: int) -> None:
        self.steps.append((explanation, expression, value))


def _start_plain(s: _Story) -> bool:
    s.amount = s.rng.randint(12, 90)
    s.sentences.append(f"{s.name} has {s.amount} {s.things}.")
    return True


def _start_groups(s: _Story) -> bool:
    groups, each = s.rng.randint(3, 9), s.rng.randint(4, 15)
    s.amount = groups * each
    s.sentences.append(f"{s.name} has {groups} {s.containers} with {each} {s.things} in each.")
    s.claim(f"{s.name} starts with {groups} {s.containers} of {each}, so", f"{groups} * {each}", s.amount)
    return True


def _buy(s: _Story) -> bool:
    extra = s.rng.randint(5, 60)
    if s.amount + extra > MAX_VALUE:
        return False
    s.sentences.append(f"Then {s.name} buys {extra} more {s.things}.")
    s.claim(f"After buying {extra} more, {s.name} has", f"{s.amount} + {extra}", s.amount + extra)
    s.amount += extra
    return True


def _give(s: _Story) -> bool:
    if s.amount < 4:
        return False
    gift = s.rng.randint(1, s.amount - 1)
    s.sentences.append(f"{s.name} gives {gift} {s.things} to {s.rng.choice(_FRIENDS)}.")
    s.claim(f"After giving {gift} away, {s.name} has", f"{s.amount} - {gift}", s.amount - gift)
    s.amount -= gift
    return True


def _scale(s: _Story) -> bool:
    factor = s.rng.randint(2, 4)
    if s.amount * factor > MAX_VALUE:
        return False
    word = {2: "twice", 3: "three times", 4: "four times"}[factor]
    s.sentences.append(f"Over the summer the collection grows until it is {word} as large.")
    s.claim(f"Being {word} as large means", f"{s.amount} * {factor}", s.amount * factor)
    s.amount *= factor
    return True


def _share(s: _Story) -> bool:
    divisors = [k for k in range(2, 10) if s.amount % k == 0 and s.amount // k >= 2]
    if not divisors:
        return False
    parts = s.rng.choice(divisors)
    s.sentences.append(
        f"{s.name} repacks them equally into {parts} {s.containers}, keeps one {s.container} and gives the rest away."
    )
    s.claim(f"One {s.container} holds", f"{s.amount} / {parts}", s.amount // parts)
    s.amount //= parts
    return True


def _buy_groups(s: _Story) -> bool:
    groups, each = s.rng.randint(2, 6), s.rng.randint(3, 12)
    bought = groups * each
    if s.amount + bought > MAX_VALUE:
        return False
    s.sentences.append(f"Next {s.name} buys {groups} {s.containers} with {each} {s.things} in each.")
    s.claim(f"The {groups} new {s.containers} hold", f"{groups} * {each}", bought)
    s.claim(f"Adding them, {s.name} has", f"{s.amount} + {bought}", s.amount + bought)
    s.amount += bought
    return True


_ONE_STEP_OPS: list[Callable[[_Story], bool]] = [_buy, _give, _scale, _share]


def _solution_text(steps: list[tuple[str, str, int]], things: str) -> str:
    lines = [f"Step {i + 1}: {why} {expr} = {value} {things}." for i, (why, expr, value) in enumerate(steps)]
    lines.append(f"The answer is {steps[-1][2]}.")
    return "\n".join(lines)


def make_problem(seed: int, index: int, min_steps: int = 2, max_steps: int = 6) -> dict:
    """One problems-table row: question, gold answer and a checkable gold solution."""
    if not 2 <= min_steps <= max_steps <= 6:
        raise ValueError("steps must satisfy 2 <= min_steps <= max_steps <= 6")
    rng = random.Random(f"{GENERATOR}:{seed}:{index}")
    target = rng.randint(min_steps, max_steps)
    things, container, containers = rng.choice(_THEMES)
    while True:
        story = _Story(rng, rng.choice(_NAMES), things, container, containers, 0)
        (_start_groups if rng.random() < 0.4 else _start_plain)(story)
        attempts = 0
        while len(story.steps) < target and attempts < 50:
            attempts += 1
            ops = _ONE_STEP_OPS + ([_buy_groups] if target - len(story.steps) >= 2 else [])
            rng.choice(ops)(story)
        if len(story.steps) == target:
            break
    story.sentences.append(f"How many {things} does {story.name} have at the end?")
    answer = story.steps[-1][2]
    meta = {
        "generator": GENERATOR,
        "seed": seed,
        "index": index,
        "n_steps": target,
        "steps": [{"expr": expr, "value": value} for _, expr, value in story.steps],
    }
    return {
        "problem_id": f"arith-s{seed}-{index:06d}",
        "question": " ".join(story.sentences),
        "answer": str(answer),
        "solution": _solution_text(story.steps, things),
        "source": "embedded",
        "meta": json.dumps(meta),
    }


def make_problems(n: int = 100, seed: int = 0, min_steps: int = 2, max_steps: int = 6) -> pd.DataFrame:
    """``n`` embedded problems as a problems table (a plain DataFrame)."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rows = [make_problem(seed, i, min_steps, max_steps) for i in range(n)]
    df = pd.DataFrame(rows, columns=PROBLEMS.names)
    df.attrs["bad_rows"] = []
    return df
