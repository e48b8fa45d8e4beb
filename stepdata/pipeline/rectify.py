"""Stage 3, rectification (Step-DPO): a right step where the policy first went wrong.

For a wrong rollout whose first error is step k, the same policy continues from
its own steps 0..k-1 (sent through the exact-continuation path, so the prefix is
byte for byte what it wrote), m times. Continuations that reach the right answer
give their first step as "chosen"; the rollout's step k is "rejected". Sampling
from the policy itself keeps chosen in-distribution, which is the point of
Step-DPO's self-generated data.

Continuations are labelled by the run's :class:`~stepdata.answers.AnswerPolicy`: one
cut at ``max_tokens`` is unfinished and never gives a chosen step (counted in the
attempt's ``unfinished``).

Per unit outcomes, recorded in the attempts table: ``pairs``; ``no_error_step``
(not localized, or localized as error-free); ``unfinished`` (the localizer found
the solution incomplete and no error in what it has); ``prefix_mismatch`` (the error step
is past the end of the steps, or the steps no longer join to the completion);
``unknown_problem``; ``prompt_mismatch`` (the template no longer renders the prompt the
rollout was sampled with: see :mod:`stepdata.pipeline.lineage`); ``no_correct_continuation``;
``no_distinct_step`` (every right continuation's first step equals the rejected one or
was dropped by the chosen-step check).

Each distinct chosen step is checked by the verifier the config names (``verify``; see
:mod:`stepdata.pipeline.verify`), all of a batch's at once, with the rollout's steps before
the error as its context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stepdata.answers import AnswerPolicy, is_unfinished
from stepdata.generation import GenerationRequest, SamplingConfig
from stepdata.pairs import make_pair, prompt_messages_of
from stepdata.pipeline.continuer import Prefix
from stepdata.pipeline.lineage import prompt_mismatch
from stepdata.pipeline.pairing import PairStage, attempt_row, attempts_frame
from stepdata.pipeline.sample import (
    ANSWER_TIMEOUT_HELP,
    LAST_NUMBER_HELP,
    calculator_setting,
    check_greedy,
)
from stepdata.pipeline.verify import ChosenStep, UnitChecks, VerifySettings
from stepdata.settings import check_settings, setting
from stepdata.steps import join_steps, normalized_step, split_steps


@dataclass(frozen=True)
class RectifyConfig(VerifySettings):
    """Stage 3 options. Step-DPO sampled 20 continuations at T=0.8, top_p=0.95; 8 is the default here.
    The chosen-step check's settings (``verify``, ...) are :class:`~stepdata.pipeline.verify.VerifySettings`."""

    template: str | None = setting(None, "The template the rollouts were sampled with (default: the one their "
                                         "table records; a template that no longer renders their prompt is a "
                                         "per-row prompt_mismatch).")
    n: int = setting(8, "Continuations per wrong rollout (Step-DPO used 20).", minimum=1)
    temperature: float = setting(0.8, "Sampling temperature.", minimum=0)
    top_p: float = setting(0.95, "Nucleus sampling mass.", minimum=0, maximum=1, min_open=True)
    max_tokens: int = setting(512, "Most tokens per continuation; one cut there is unfinished.", minimum=1)
    seed: int = setting(0, "Base seed.")
    max_pairs_per_rollout: int | None = setting(None, "Keep at most this many distinct chosen steps per rollout.",
                                                minimum=1)
    max_pairs_per_problem: int | None = setting(None, "Keep at most this many pairs per problem (and pair kind).",
                                                minimum=1)
    max_rollouts_per_problem: int | None = setting(None, "Rectify at most this many localized rollouts per problem "
                                                         "(the rest are counted in the summary's left_out).", minimum=1)
    answer_timeout: float = setting(5.0, ANSWER_TIMEOUT_HELP, minimum=0, min_open=True)
    last_number_fallback: bool = setting(False, LAST_NUMBER_HELP)
    calculator: bool = calculator_setting()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self)
        check_greedy(self.n, self.temperature)

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed, calculator=self.calculator)


class RectifyStage(PairStage):
    """Localized rollouts in, attempts (with their Step-DPO pairs) out: stage 3 as a block.

    ``engine``: the policy (a Generator, or an EngineConfig / EngineHandle built when a
    batch needs it); ``problems`` holds the questions and gold answers.
    """

    name, Config = "rectify", RectifyConfig

    @property
    def sampling(self) -> SamplingConfig:
        return self.config.sampling()

    def units(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """Every localized rollout (keyed by its rollout id), at most ``max_rollouts_per_problem`` per problem."""
        units = table.assign(unit_id=table["rollout_id"])
        cap = self.config.max_rollouts_per_problem
        if cap is None:
            return units, {}
        kept = units.groupby("problem_id", sort=False).head(cap).reset_index(drop=True)
        return kept, {"over_max_rollouts_per_problem": len(units) - len(kept)}

    def _precheck(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """(outcome, detail) when the unit cannot be rectified, None when it can."""
        k, steps = row.get("error_step"), list(row.get("steps") or [])
        if row.get("status") == "unfinished":
            return "unfinished", f"the localizer found the solution unfinished ({row.get('rationale')})"
        if k is None or pd.isna(k) or int(k) < 0:
            return "no_error_step", f"error_step is {k!r}: nothing to rectify"
        if row["problem_id"] not in self.problems.index:
            return "unknown_problem", f"problem {row['problem_id']!r} is not in the problems table"
        if int(k) >= len(steps):
            return "prefix_mismatch", f"error_step {int(k)} but the rollout has {len(steps)} steps"
        if isinstance(row.get("completion"), str) and join_steps(steps) != row["completion"]:
            return "prefix_mismatch", "the steps no longer join to the rollout's completion"
        question = self.problems.loc[row["problem_id"], "question"]
        mismatch = prompt_mismatch(row.get("prompt"), self.generator,
                                   GenerationRequest.chat(str(row["problem_id"]), self.template.render(question=question)))
        if mismatch is not None:
            return "prompt_mismatch", mismatch
        return None

    def process(self, localized: pd.DataFrame) -> pd.DataFrame:
        records = localized.to_dict("records")
        out: dict[str, dict[str, Any]] = {}
        work: list[tuple[dict[str, Any], Prefix]] = []
        for row in records:
            skip = self._precheck(row)
            if skip is not None:
                out[row["rollout_id"]] = attempt_row(row["rollout_id"], row["problem_id"], self.name, skip[0],
                                                     detail=skip[1])
                continue
            problem = self.problems.loc[row["problem_id"]]
            prefix = join_steps(list(row["steps"])[: int(row["error_step"])])
            work.append((row, Prefix(row["rollout_id"], problem["question"], prefix, gold=problem["answer"])))
        continued = self.continuer.continue_and_label([p for _, p in work], self.sampling)
        drafts: dict[str, _Draft] = {}
        for (row, _), result in zip(work, continued):
            tokens = result.tokens
            self.count_tokens(tokens)
            if not result.ok:
                out[row["rollout_id"]] = attempt_row(row["rollout_id"], row["problem_id"], self.name, None,
                                                     error=result.error)
                continue
            row_labels = result.labels
            failed = [label for label in row_labels if label.error is not None]
            if failed and not any(label.correct for label in row_labels):
                out[row["rollout_id"]] = attempt_row(row["rollout_id"], row["problem_id"], self.name, None,
                                                     candidates=len(row_labels), generated_tokens=tokens,
                                                     unfinished=sum(not label.finished for label in row_labels),
                                                     error=failed[0].error, calculator=result.calculator)
                continue
            drafts[row["rollout_id"]] = self._draft(row, result.completions, row_labels, tokens)
            drafts[row["rollout_id"]].calculator = result.calculator
        # every chosen step of the batch goes to the verifier at once
        checks = self.verifier.check_units({key: d.steps for key, d in drafts.items()},
                                           self.config.max_pairs_per_rollout)
        for key, draft in drafts.items():
            out[key] = self._attempt(draft, checks[key])
        return attempts_frame([out[r["rollout_id"]] for r in records])

    def _draft(self, row: dict[str, Any], completions: list[Any], labels: list[Any], tokens: int) -> _Draft:
        """A unit's distinct chosen steps (first steps of the right continuations), in continuation order."""
        k = int(row["error_step"])
        steps = list(row["steps"])
        right = [c for c, label in zip(completions, labels) if label.correct]
        draft = _Draft(row, len(completions), len(right), sum(not label.finished for label in labels), tokens)
        seen = {normalized_step(steps[k])}
        for completion in right:
            pieces = split_steps(completion.text)
            if not pieces or normalized_step(pieces[0]) in seen:
                continue
            seen.add(normalized_step(pieces[0]))
            draft.chosen.append((pieces[0], completion.text[len(pieces[0]):]))
            draft.steps.append(ChosenStep(f"{row['rollout_id']}:chosen{len(draft.steps)}", row["problem_id"],
                                          steps[:k], pieces[0]))
        return draft

    def _attempt(self, draft: _Draft, checks: UnitChecks) -> dict[str, Any]:
        row = draft.row
        k = int(row["error_step"])
        steps = list(row["steps"])
        problem = self.problems.loc[row["problem_id"]]
        counts = dict(candidates=draft.candidates, accepted=draft.right, generated_tokens=draft.tokens,
                      unfinished=draft.unfinished, calculator=draft.calculator, **checks.columns())
        if checks.error is not None:  # the verifier failed: the unit is redone on resume
            return attempt_row(row["rollout_id"], row["problem_id"], self.name, None, error=checks.error,
                               detail=checks.describe(), **counts)
        pairs = []
        for i in checks.kept:
            chosen, rest = draft.chosen[i]
            pairs.append(make_pair(
                problem_id=row["problem_id"], question=problem["question"], answer=problem["answer"],
                prompt_messages=prompt_messages_of(self.template.render(question=problem["question"])),
                prefix_steps=steps[:k], chosen=chosen, rejected=steps[k],
                chosen_rest=rest, rejected_rest=join_steps(steps[k + 1:]),
                kind="step-dpo", error_step=k, source=problem.get("source"), chosen_verified=checks.verified(i),
                chosen_source="policy",
                model=self.generator.model, sampling=self.sampling.as_record() | (
                    {"calculator": True} if self.config.calculator else {}), localizer=row.get("method"),
                rejected_finished=not is_unfinished(row.get("finish_reason")),
            ))
        detail = (f"{draft.right} of {draft.candidates} continuations right ({draft.unfinished} unfinished); "
                  f"{len(draft.chosen)} distinct chosen steps, {len(pairs)} pairs; {checks.describe()}")
        if not draft.right:
            outcome = "no_correct_continuation"
        elif not pairs:
            outcome = "no_distinct_step"
        else:
            outcome = "pairs"
        return attempt_row(row["rollout_id"], row["problem_id"], self.name, outcome, detail=detail, pairs=pairs,
                           **counts)


@dataclass
class _Draft:
    """A rectified unit before its chosen steps are checked."""

    row: dict[str, Any]
    candidates: int  # continuations generated
    right: int  # continuations that reached the gold answer
    unfinished: int
    tokens: int
    chosen: list[tuple[str, str]] = field(default_factory=list)  # distinct (chosen step, the rest of its solution)
    calculator: tuple[int | None, int | None] = (None, None)  # calculator decoding's calls and changes
    steps: list[ChosenStep] = field(default_factory=list)  # the same, as steps to check


def run_rectify(generator: Any, localized: pd.DataFrame, problems: pd.DataFrame, out: str,
                config: RectifyConfig = RectifyConfig(), **run_options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Stage 3 run locally and resumably: attempts in ``OUT.attempts.parquet``, Step-DPO pairs in ``out``.

    ``run_options`` are :class:`~stepdata.pipeline.executor.RunOptions` fields (batch_size, shard, ...).
    """
    from stepdata.pipeline.executor import LocalExecutor, split_options

    config, options = split_options(config, {"out": str(out), **run_options})
    result = LocalExecutor(options).run(RectifyStage(generator, problems, config),
                                                                         localized)
    return result.table, result.stats
