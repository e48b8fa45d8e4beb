"""Evaluation sets by name, resolved (and their files found) before any training starts.

``embedded`` is held-out embedded problems with the training step counts (a seed
that no training problem uses); ``embedded-long`` has more steps than any training
problem (length generalisation); any other name is a data set the loaders know
(``svamp``, ``multiarith``, ``gsm8k``, ``asdiv``, ...), read from the data directory
and cut to a seeded sample of ``eval_problems`` (or the set's own size in ``eval_sizes``).
An unknown name, or a known one whose file is not there, fails at once, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stepdata.evaluate import EVAL_SEED
from stepdata.experiment.config import ExperimentConfig
from stepdata.settings import SettingError

EMBEDDED = "embedded"
EMBEDDED_LONG = "embedded-long"
LONG_SEED = EVAL_SEED + 1  # embedded-long: another held-out seed
SAMPLE_SEED = 17  # which problems of a named set are drawn (the same for every arm and run)


@dataclass(frozen=True)
class EvalSet:
    """A resolved evaluation set: its name, what it is, and the problems of it."""

    name: str
    description: str
    has_gold_steps: bool  # embedded problems: every step can be checked exactly


def known_names() -> list[str]:
    """Every name an evaluation set may have here (the loaders' names read at call time, so a new loader counts)."""
    from stepdata.loaders import KNOWN_SETS

    return [EMBEDDED, EMBEDDED_LONG, *sorted(KNOWN_SETS)]


def check_eval_sets(config: ExperimentConfig) -> list[str]:
    """Why the config's evaluation sets cannot be read (empty when all can), without loading them."""
    from stepdata.loaders import KNOWN_SETS, resolve_dataset

    problems = []
    for name in config.eval_sets:
        if name in (EMBEDDED, EMBEDDED_LONG):
            if name == EMBEDDED_LONG and config.max_steps >= 6:
                problems.append(f"eval set {name!r}: training problems already have up to 6 steps (max_steps "
                                f"{config.max_steps}); there are no longer embedded problems")
            continue
        if name not in KNOWN_SETS:
            problems.append(f"unknown eval set {name!r}; known: {', '.join(known_names())}")
            continue
        try:
            resolve_dataset(name, config.data_dir)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"eval set {name!r}: {exc}")
    return problems


def load_eval_set(name: str, config: ExperimentConfig) -> tuple[EvalSet, pd.DataFrame]:
    """The problems of evaluation set ``name`` (its size in ``eval_sizes``, else ``eval_problems``; the same on
    every call)."""
    from stepdata.embedded import make_problems
    from stepdata.loaders import KNOWN_SETS, load_problems

    n = config.eval_size(name)
    if name == EMBEDDED:
        return (EvalSet(name, f"held-out embedded problems, {config.min_steps}-{config.max_steps} steps (seed "
                              f"{EVAL_SEED})", True),
                make_problems(n, seed=EVAL_SEED, min_steps=config.min_steps, max_steps=config.max_steps))
    if name == EMBEDDED_LONG:
        low = config.max_steps + 1
        return (EvalSet(name, f"held-out embedded problems, {low}-6 steps: longer than any training problem (seed "
                              f"{LONG_SEED})", True),
                make_problems(n, seed=LONG_SEED, min_steps=low, max_steps=6))
    if name not in KNOWN_SETS:
        raise SettingError("eval_sets", f"unknown eval set {name!r}; known: {', '.join(known_names())}")
    problems = load_problems(name, data_dir=config.data_dir)
    if len(problems) > n:
        problems = problems.sample(n=n, random_state=SAMPLE_SEED).sort_index()
    return (EvalSet(name, f"{name}: {len(problems)} problems (a seeded sample)" if len(problems) == n else
                    f"{name}: all {len(problems)} problems", False), problems.reset_index(drop=True))


def write_eval_problems(name: str, config: ExperimentConfig, folder: Path) -> tuple[EvalSet, Path, pd.DataFrame]:
    """The set's problems as a problems table in ``folder`` (written once, and again only when the settings now
    name other problems: a resumed run reads it back); returns the set, the file and the problems."""
    from stepdata.io import read_table, write_table

    path = folder / f"{name}.parquet"
    described, problems = load_eval_set(name, config)
    if path.exists():  # a changed size (or data file) rewrites it: evaluations read what the settings say
        kept = read_table(path, kind="problems")
        if list(kept["problem_id"].astype(str)) == list(problems["problem_id"].astype(str)):
            return described, path, problems
    write_table(problems, path, "problems", config={"eval_set": name, "description": described.description})
    return described, path, problems
