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
``unknown_problem``; ``no_correct_continuation``; ``no_distinct_step`` (every
right continuation's first step equals the rejected one or failed verification).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from stepdata.answers import AnswerPolicy, is_unfinished
from stepdata.generation import Generator, SamplingConfig
from stepdata.localize.exact import verify_step
from stepdata.pairs import make_pair, prompt_messages_of
from stepdata.pipeline.continuer import Continuer, Prefix
from stepdata.pipeline.pairing import attempt_row, attempts_frame
from stepdata.pipeline.run import StageRun
from stepdata.prompts import load_prompt
from stepdata.steps import join_steps, split_steps

VerifyMode = Literal["mark", "drop", "none"]
_SPACE = re.compile(r"\s+")


def normalized(step: str) -> str:
    """A step compared as people read it: whitespace collapsed."""
    return _SPACE.sub(" ", step).strip()


@dataclass(frozen=True)
class RectifyConfig:
    """Stage 3 options. Step-DPO sampled 20 continuations at T=0.8, top_p=0.95; 8 is the default here."""

    template: str = "step_by_step"
    n: int = 8
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0
    max_pairs_per_rollout: int | None = None
    # mark: check each chosen step (exact checker on embedded problems, rules elsewhere) and record the verdict
    # in chosen_verified; drop: also drop the ones it rejects (counted); none: no check
    verify: VerifyMode = "mark"
    answer_timeout: float = 5.0
    last_number_fallback: bool = False  # model text states an answer only explicitly unless this is True

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed)


class RectifyStage:
    """Localized rollouts in, attempts (with their Step-DPO pairs) out: a stage's ``process``."""

    name = "rectify"

    def __init__(self, generator: Generator, problems: pd.DataFrame, config: RectifyConfig = RectifyConfig()):
        self.generator, self.config = generator, config
        self.template = load_prompt(config.template)
        self.continuer = Continuer(generator, self.template, config.answer_policy())  # checks the template continues
        self.problems = problems.drop_duplicates("problem_id").set_index("problem_id")
        self.sampling = config.sampling()
        self._lock = threading.Lock()
        self.totals = {"completion_tokens": 0}

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
        return None

    def __call__(self, localized: pd.DataFrame) -> pd.DataFrame:
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
        for (row, _), result in zip(work, continued):
            tokens = result.tokens
            with self._lock:
                self.totals["completion_tokens"] += tokens
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
                                                     error=failed[0].error)
                continue
            out[row["rollout_id"]] = self._pairs_for(row, result.completions, row_labels, tokens)
        return attempts_frame([out[r["rollout_id"]] for r in records])

    def _pairs_for(self, row: dict[str, Any], completions: list[Any],
                   labels: list[Any], tokens: int) -> dict[str, Any]:
        k = int(row["error_step"])
        steps = list(row["steps"])
        problem = self.problems.loc[row["problem_id"]]
        rejected = steps[k]
        right = [c for c, label in zip(completions, labels) if label.correct]
        unfinished = sum(not label.finished for label in labels)
        rejected_finished = not is_unfinished(row.get("finish_reason"))
        seen, pairs, failed_check = {normalized(rejected)}, [], 0
        for completion in right:
            pieces = split_steps(completion.text)
            if not pieces:
                continue
            chosen = pieces[0]
            key = normalized(chosen)
            if key in seen:
                continue
            seen.add(key)
            verified = verify_step(chosen, k, problem.get("meta")) if self.config.verify != "none" else None
            if verified is False:
                failed_check += 1
                if self.config.verify == "drop":
                    continue
            pairs.append(make_pair(
                problem_id=row["problem_id"], question=problem["question"], answer=problem["answer"],
                prompt_messages=prompt_messages_of(self.template.render(question=problem["question"])),
                prefix_steps=steps[:k], chosen=chosen, rejected=rejected,
                chosen_rest=completion.text[len(chosen):], rejected_rest=join_steps(steps[k + 1:]),
                kind="step-dpo", error_step=k, source=problem.get("source"), chosen_verified=verified,
                model=self.generator.model, sampling=self.sampling.as_record(), localizer=row.get("method"),
                rejected_finished=rejected_finished,
            ))
            if self.config.max_pairs_per_rollout and len(pairs) >= self.config.max_pairs_per_rollout:
                break
        detail = (f"{len(right)} of {len(completions)} continuations right ({unfinished} unfinished); "
                  f"{len(pairs)} distinct chosen steps; "
                  f"{failed_check} failed the step check" + (" (dropped)" if self.config.verify == "drop" else ""))
        if not right:
            outcome = "no_correct_continuation"
        elif not pairs:
            outcome = "no_distinct_step"
        else:
            outcome = "pairs"
        return attempt_row(row["rollout_id"], row["problem_id"], self.name, outcome, detail=detail,
                           candidates=len(completions), accepted=len(right), pairs=pairs, generated_tokens=tokens,
                           unfinished=unfinished)


def rectify_run(model: str, localized: pd.DataFrame, out: str, config: RectifyConfig = RectifyConfig(), *,
                max_pairs_per_problem: int | None = None, batch_size: int = 64, shard: tuple[int, int] = (0, 1),
                overwrite: bool = False, allow_config_change: bool = False, run_config: dict[str, Any] | None = None,
                progress: bool = True) -> tuple[StageRun, pd.DataFrame]:
    """Stage 3's resumable run and its units, built from the model's name alone.

    Needs no engine, so a caller can check the output folder (``run.check(units)``: a
    changed config, a finished run) before it spends time loading one.
    """
    from dataclasses import asdict

    from stepdata.pipeline.pairing import attempts_path_for

    settings = {"stage": "rectify", "model": model, "max_pairs_per_problem": max_pairs_per_problem,
                **asdict(config), **(run_config or {})}
    run = StageRun("rectify", attempts_path_for(out), "attempts", settings, key_column="unit_id",
                   batch_size=batch_size, shard=shard, overwrite=overwrite, allow_config_change=allow_config_change,
                   progress=progress)
    return run, localized.assign(unit_id=localized["rollout_id"])  # the attempts table's key


def run_rectify(generator: Generator, localized: pd.DataFrame, problems: pd.DataFrame, out: str,
                config: RectifyConfig = RectifyConfig(), *, max_pairs_per_problem: int | None = None,
                batch_size: int = 64, shard: tuple[int, int] = (0, 1), overwrite: bool = False,
                allow_config_change: bool = False, run_config: dict[str, Any] | None = None,
                progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Stage 3 as a resumable run: attempts in ``OUT.attempts.parquet``, Step-DPO pairs in ``out``."""
    from stepdata.pipeline.pairing import run_pair_stage

    stage = RectifyStage(generator, problems, config)
    run, units = rectify_run(generator.model, localized, out, config, max_pairs_per_problem=max_pairs_per_problem,
                             batch_size=batch_size, shard=shard, overwrite=overwrite,
                             allow_config_change=allow_config_change, run_config=run_config, progress=progress)
    return run_pair_stage(run, units, stage, max_pairs_per_problem,
                          tokens_done=lambda: stage.totals["completion_tokens"])
