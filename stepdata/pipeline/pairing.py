"""What stages 3 and 4 share: one attempt row per unit, then a flat pairs table.

A pair-making stage may yield zero, one or many pairs per unit, and "zero" must
be visible (a model that never reaches the answer, a prefix that does not match
its rollout). So the stage's resumable output is an attempts table, one row per
unit with its outcome and its pairs as JSON; when the run completes the pairs are
flattened into the pairs table, per-problem caps applied, and everything that did
not become a pair is counted in the summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.io import read_table, write_text_atomic
from stepdata.pairs.build import pair_id
from stepdata.pairs.stats import chosen_verified_counts, pairs_by_kind
from stepdata.pipeline.block import EngineHandle, StageBlock
from stepdata.pipeline.run import StageRun
from stepdata.pipeline.sample import calculator_stats
from stepdata.pipeline.verify import ChosenVerifier, verify_stats
from stepdata.schema import ATTEMPTS, PAIRS
from stepdata.secrets import scrub_object


def attempt_row(unit_id: str, problem_id: str, stage: str, outcome: str | None, *, detail: str | None = None,
                candidates: int = 0, accepted: int = 0, pairs: Sequence[dict[str, Any]] = (),
                generated_tokens: int = 0, unfinished: int = 0, error: str | None = None, verify_calls: int = 0,
                verify_tokens: int = 0, verify_checks: Sequence[dict[str, Any]] = (),
                calculator: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """One attempts-table row (``unfinished``: continuations cut at max_tokens; ``verify_*``: the chosen-step
    checks, see :mod:`stepdata.pipeline.verify`; ``calculator``: calls and changes of calculator decoding over
    the unit's continuations, None without it)."""
    return {"unit_id": unit_id, "problem_id": problem_id, "stage": stage, "outcome": outcome, "detail": detail,
            "candidates": candidates, "accepted": accepted,
            "pairs": json.dumps(list(pairs), ensure_ascii=False), "generated_tokens": generated_tokens,
            "unfinished": unfinished, "error": error, "verify_calls": verify_calls, "verify_tokens": verify_tokens,
            "verify_checks": json.dumps(list(verify_checks), ensure_ascii=False),
            "calculator_calls": calculator[0], "calculator_changed": calculator[1]}


def attempts_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=ATTEMPTS.names)


def flatten_pairs(attempts: pd.DataFrame, max_per_problem: int | None = None) -> tuple[pd.DataFrame, int]:
    """The pairs of every attempt, in unit order, each once, at most ``max_per_problem`` per problem and kind;
    (pairs, capped).

    A pair id covers the whole pair (:func:`stepdata.pairs.pair_id`, recomputed here, so attempts written
    by an older version get today's ids), and a pair found again from another unit (two rollouts with the
    same text) is the same pair: it is kept once and counted in ``pairs.attrs["duplicate_pairs"]``, since a
    pair id is unique in a pairs table. The cap is per kind: SCDPO kept 2 step-controlled negatives per
    GSM8K-like problem and added whole-solution DPO pairs on top, so a DPO pair never takes an SCDPO pair's place.
    """
    rows: list[dict[str, Any]] = []
    per_problem: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    capped = duplicates = 0
    for attempt in attempts.itertuples(index=False):
        for pair in json.loads(attempt.pairs or "[]"):
            pair["pair_id"] = pair_id(pair)
            if pair["pair_id"] in seen:
                duplicates += 1
                continue
            seen.add(pair["pair_id"])
            key = (pair["problem_id"], pair["kind"])
            if max_per_problem is not None and per_problem[key] >= max_per_problem:
                capped += 1
                continue
            per_problem[key] += 1
            rows.append(pair)
    pairs = pd.DataFrame(rows, columns=PAIRS.names)
    pairs.attrs["duplicate_pairs"] = duplicates
    return pairs, capped


def attempts_stats(attempts: pd.DataFrame) -> dict[str, Any]:
    """Counts by outcome and the generation spent, for the summary."""
    outcomes = attempts["outcome"].fillna("error").value_counts()
    return {
        "units": len(attempts),
        "outcomes": {str(k): int(v) for k, v in outcomes.items()},
        "candidates": int(attempts["candidates"].fillna(0).sum()),
        "accepted": int(attempts["accepted"].fillna(0).sum()),
        "unfinished_continuations": int(attempts["unfinished"].fillna(0).sum()),
        "pairs_before_caps": int(sum(len(json.loads(p or "[]")) for p in attempts["pairs"])),
        "generated_tokens": int(attempts["generated_tokens"].fillna(0).sum()),
        "verify": verify_stats(attempts),
    } | calculator_stats(attempts)


def pairs_path_for(attempts_path: Path) -> Path:
    """``x.attempts.parquet`` -> ``x.parquet`` (shards keep their shard suffix)."""
    name = attempts_path.name.replace(".attempts", "", 1)
    return attempts_path.with_name(name)


def attempts_path_for(pairs_out: str | Path) -> Path:
    """Where the attempts of ``pairs.parquet`` go: ``pairs.attempts.parquet``."""
    out = Path(pairs_out)
    return out.with_name(f"{out.stem}.attempts{out.suffix or '.parquet'}")


class PairStage(StageBlock):
    """A stage that makes pairs by continuing solutions with the policy (rectify, synthesize).

    Attempts are its resumable table, and :meth:`finalize` flattens them into the pairs
    table next to it, capped per problem. It continues with the template the input was
    sampled with (its lineage) unless the config names one, through one
    :class:`~stepdata.pipeline.continuer.Continuer` built when a batch first needs the engine.
    """

    kind, key_column, shard_column = "attempts", "unit_id", "problem_id"  # caps are per problem: shard by it

    def __init__(self, engine: Any, problems: pd.DataFrame, config: Any) -> None:
        super().__init__(engine, config)
        self._use_template(config.template or "step_by_step")
        self.problems = problems.drop_duplicates("problem_id").set_index("problem_id")
        self.answers = config.answer_policy()
        # the chosen-step verifier: its own engine (settings only, built when a batch first checks a step), if any
        verify_engine = config.verify_engine(self.engine_config)
        self._verify_handle = EngineHandle(verify_engine) if verify_engine is not None else None
        self._verifier: ChosenVerifier | None = None

    def _use_template(self, name: str) -> None:
        from stepdata.prompts import load_prompt

        template = load_prompt(name)
        if not template.continues_assistant:
            raise ValueError(f"template {template.name!r} must end with a partial assistant answer to continue from")
        self.template_name, self.template, self._continuer = name, template, None

    @property
    def continuer(self) -> Any:
        from stepdata.pipeline.continuer import Continuer

        if self._continuer is None:
            self._continuer = Continuer(self.generator, self.template, self.answers)
        return self._continuer

    @property
    def verifier(self) -> ChosenVerifier:
        """The chosen-step verifier (:mod:`stepdata.pipeline.verify`); a model-based one samples from the
        verifier engine, else from the policy, built when it first has a step to check."""
        if self._verifier is None:
            handle = self._verify_handle
            engine = (lambda: handle.get()) if handle is not None else (lambda: self.generator)
            self._verifier = ChosenVerifier(self.config, self.problems, engine, template=self.template_name,
                                            answer_policy=self.answers)
        return self._verifier

    def close(self) -> None:
        """Release the engines this block built from settings: the policy's (when owned) and the verifier's."""
        super().close()
        if getattr(self, "_verify_handle", None) is not None:
            self._verify_handle.close()
            self._verifier = None

    def __getstate__(self) -> dict[str, Any]:
        # the continuer and the verifier hold engines: rebuilt where the block runs (the verifier engine's
        # handle travels as its settings)
        return super().__getstate__() | {"_continuer": None, "_verifier": None}

    def inherit(self, lineage: dict[str, Any]) -> None:
        """The input's lineage; its template is used unless the config names one."""
        super().inherit(lineage)
        if self.config.template is None and lineage.get("template"):
            self._use_template(lineage["template"])

    def settings(self) -> dict[str, Any]:
        verify_engine = {"verify_engine": self._verify_handle.describe()} if self._verify_handle is not None else {}
        return super().settings() | {"template": self.template_name} | verify_engine

    @classmethod
    def build(cls, engine: Any, problems: pd.DataFrame | None, config: Any) -> PairStage:
        if problems is None:
            raise ValueError(f"{cls.name} needs the problems (questions and gold answers): give --problems")
        return cls(engine, problems, config)

    def output_path(self, out: str | Path) -> Path:
        return attempts_path_for(out)

    def extra_outputs(self, run: StageRun) -> list[Path]:
        return [pairs_path_for(run.final)]

    def stats(self, attempts: pd.DataFrame) -> dict[str, Any]:
        stats = attempts_stats(attempts)
        stats["verify"] = {"verifier": self.config.verify, "action": self.config.verify_action} | stats["verify"]
        return stats

    def finalize(self, run: StageRun, attempts: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        return finish_pairs(run, attempts, self.config.max_pairs_per_problem)

    def finished(self, run: StageRun, summary: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        return read_table(pairs_path_for(run.final), kind="pairs"), dict(summary.get("stage_stats") or {})


def run_pair_stage(run: StageRun, units: pd.DataFrame, process: Callable[[pd.DataFrame], pd.DataFrame],
                   max_per_problem: int | None, extra_stats: dict[str, Any] | None = None,
                   tokens_done: Callable[[], int] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run a pair-making ``process`` resumably over ``units`` with a bare StageRun, then :func:`finish_pairs`."""
    attempts = run.run(units, process, lambda df: attempts_stats(df) | (extra_stats or {}), tokens_done=tokens_done)
    return finish_pairs(run, attempts, max_per_problem)


def finish_pairs(run: StageRun, attempts: pd.DataFrame,
                 max_per_problem: int | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write the flat pairs table next to the attempts; returns the pairs and the stage statistics
    (also merged into both summary files)."""
    pairs, capped = flatten_pairs(attempts, max_per_problem)
    pairs_path = pairs_path_for(run.final)
    run.write_output(pairs, pairs_path, "pairs", run.config | {"stage": run.stage})
    stats = dict(run.summary.stage_stats) | {"pairs": len(pairs), "capped_per_problem": capped,
                                            "duplicate_pairs": pairs.attrs["duplicate_pairs"],
                                            "pairs_by_kind": pairs_by_kind(pairs),
                                            "chosen_verified": chosen_verified_counts(pairs),
                                            "pairs_output": str(pairs_path)}
    run.summary.stage_stats = stats
    text = json.dumps(scrub_object(run.summary.as_dict()), indent=1, default=str)
    for path in (run.final, pairs_path):
        write_text_atomic(path.with_name(path.name + ".summary.json"), text)
    return pairs, stats
