"""Stage 4, step-controlled negatives (SCDPO): wrong continuations that start at a known step.

From a correct solution (a right rollout, or a reference solution) and a cut
point k, the policy continues from steps 0..k-1 one step at a time, the
temperature rising with every generated step (SCDPO's schedule is
``min(1.1 + 0.1 * i, 1.4)`` for the i-th generated step), so the continuation
drifts off and, often, ends at a wrong answer. The original continuation (steps
k..end) is "chosen", the wrong one "rejected"; both share the prefix, so the
divergence starts at step k by construction.

Up to ``rounds`` continuations per cut are generated together (one request with
n samples for the first step, so they share the prefix's cache); the first, in
round order, that ends at a wrong answer, is not degenerate and differs from the
original is kept. Unfinished continuations (a step hit max_tokens), over-long ones
(too many steps), ones with no answer and ones that repeat a step are dropped and
counted.

Step by step generation stops each step at ``"\\nStep"``. Why a step ended comes
from the backend (``Completion.stop_reason``): at the step marker the solution goes
on with another step; at end-of-sequence it is finished and never extended. Only
when a backend cannot say (an OpenAI-compatible server that does not report it) is
the end guessed from an explicitly stated answer.

When the regenerated text repeats the original's steps k..m-1 word for word, the
pair's shared prefix is extended to them and its ``error_step`` is m, the first
step that differs; a continuation identical to the original is no negative.

The chosen side's first step (the original's step m) is checked by the verifier the
config names (``verify``; see :mod:`stepdata.pipeline.verify`), all of a batch's at once:
a right answer does not make every step of the original right.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stepdata.answers import AnswerPolicy
from stepdata.generation import STOP_EOS, STOP_LENGTH, GenerationRequest, SamplingConfig
from stepdata.pairs import make_pair, prompt_messages_of
from stepdata.pipeline.continuer import Continued, Prefix
from stepdata.pipeline.lineage import prompt_mismatch
from stepdata.pipeline.pairing import PairStage, attempt_row, attempts_frame
from stepdata.pipeline.sample import (
    ANSWER_TIMEOUT_HELP,
    LAST_NUMBER_HELP,
    calculator_setting,
)
from stepdata.pipeline.verify import ChosenStep, UnitChecks, VerifySettings
from stepdata.prompts import load_prompt
from stepdata.settings import check_settings, setting
from stepdata.steps import (
    join_steps,
    normalized_step,
    split_steps,
    strip_partial_overlap,
    to_step_format,
)

STEP_STOP = "\nStep"
UNIT_COLUMNS = ["unit_id", "problem_id", "steps", "wrong_completion", "wrong_finished", "prompt"]


@dataclass(frozen=True)
class SynthesizeConfig(VerifySettings):
    """Stage 4 options (defaults from SCDPO's code where it has one). The chosen-step check's settings
    (``verify``, ...) are :class:`~stepdata.pipeline.verify.VerifySettings`."""

    template: str | None = setting(None, "Prompt template (default: the one the rollouts table records, else "
                                         "step_by_step).")
    temperature_start: float = setting(1.1, "Temperature of the first generated step (SCDPO: 1.1).", minimum=0)
    temperature_step: float = setting(0.1, "Added per generated step (SCDPO: 0.1).", minimum=0)
    temperature_max: float = setting(1.4, "Highest temperature (SCDPO: 1.4).", minimum=0)
    top_p: float = setting(1.0, "Nucleus sampling mass.", minimum=0, maximum=1, min_open=True)
    rounds: int = setting(3, "Continuations tried per cut point.", minimum=1)
    cuts: int | None = setting(None, "Cut points sampled per solution (default: every step but the last).",
                               minimum=1)
    include_last_step: bool = setting(False, "Also cut before the last step.")
    max_step_tokens: int = setting(160, "Longest generated step.", minimum=1)
    extra_steps: int = setting(3, "A continuation may run this many steps past the original before it is dropped.",
                               minimum=0)
    seed: int = setting(0, "Base seed.")
    max_pairs_per_solution: int | None = setting(None, "Keep at most this many pairs per solution.", minimum=1)
    max_pairs_per_problem: int | None = setting(2, "Per problem and pair kind (DPO pairs have their own cap): SCDPO "
                                                   "kept 2 for GSM8K-like data, 3 for MATH-like data.", minimum=1)
    max_solutions_per_problem: int | None = setting(None, "Use at most this many correct solutions per problem "
                                                          "(the rest are counted in the summary's left_out).",
                                                    minimum=1)
    dpo_pairs: bool = setting(False, "Also add whole-solution DPO pairs (correct vs wrong rollout).")
    answer_timeout: float = setting(5.0, ANSWER_TIMEOUT_HELP, minimum=0, min_open=True)
    schedule: tuple[float, ...] = setting((), "Per-step temperatures, e.g. '1.1,1.2,1.3,1.4' (overrides "
                                              "--temperature-start/-step/-max).", minimum=0)
    last_number_fallback: bool = setting(False, LAST_NUMBER_HELP)
    calculator: bool = calculator_setting()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self)

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def temperature(self, i: int) -> float:
        """Temperature of the i-th generated step (0-based)."""
        if self.schedule:
            return self.schedule[min(i, len(self.schedule) - 1)]
        return min(self.temperature_start + self.temperature_step * i, self.temperature_max)


@dataclass
class _Branch:
    """One continuation being grown step by step."""

    unit: int
    cut: int
    round: int
    text: str = ""
    done: bool = False
    dropped: str | None = None
    tokens: int = 0
    completions: list[Any] = field(default_factory=list)  # its steps as generated (calculator counts)


class SynthesizeStage(PairStage):
    """Correct solutions in, attempts (with their SCDPO pairs) out: stage 4 as a block.

    Its input is a rollouts table (its correct rollouts), a problems table (their
    reference solutions) or ready units: rows with ``unit_id``, ``problem_id``,
    ``steps`` (a correct solution's steps), optionally ``wrong_completion`` (for
    ``dpo_pairs``) and ``prompt`` (the rollout's stored prompt, checked against the
    template).
    """

    name, Config = "synthesize", SynthesizeConfig

    def units(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """Ready units as they are; else the correct rollouts, or the problems' reference solutions."""
        if "unit_id" in table.columns:
            units, left = table, {}
        elif "rollout_id" in table.columns:
            units, left = synthesis_units(rollouts=table)
        else:
            units, left = synthesis_units(problems=table, template=self.template_name)
        cap = self.config.max_solutions_per_problem
        if cap is not None:
            kept = units.groupby("problem_id", sort=False).head(cap).reset_index(drop=True)
            left = left | {"over_max_solutions_per_problem": len(units) - len(kept)}
            units = kept
        return units, left

    def cut_points(self, unit_id: str, n_steps: int) -> list[int]:
        last = n_steps if self.config.include_last_step else n_steps - 1
        cuts = list(range(max(last, 0)))
        if self.config.cuts is not None and len(cuts) > self.config.cuts:
            rng = random.Random(f"{self.config.seed}:{unit_id}")
            cuts = sorted(rng.sample(cuts, self.config.cuts))
        return cuts

    def _sampling(self, level: int, n: int) -> SamplingConfig:
        return SamplingConfig(n=n, temperature=self.config.temperature(level), top_p=self.config.top_p,
                              max_tokens=self.config.max_step_tokens, stop=(STEP_STOP,), seed=self.config.seed,
                              calculator=self.config.calculator)

    def process(self, units: pd.DataFrame) -> pd.DataFrame:
        records = units.to_dict("records")
        out: dict[str, dict[str, Any]] = {}
        branches: list[_Branch] = []
        for index, row in enumerate(records):
            steps = list(row.get("steps") or [])
            if row["problem_id"] not in self.problems.index:
                out[row["unit_id"]] = attempt_row(row["unit_id"], row["problem_id"], self.name, "unknown_problem",
                                                  detail=f"problem {row['problem_id']!r} is not in the problems table")
                continue
            question = self.problems.loc[row["problem_id"], "question"]
            mismatch = prompt_mismatch(row.get("prompt"), self.generator, GenerationRequest.chat(
                str(row["problem_id"]), self.template.render(question=question)))
            if mismatch is not None:
                out[row["unit_id"]] = attempt_row(row["unit_id"], row["problem_id"], self.name, "prompt_mismatch",
                                                  detail=mismatch)
                continue
            cuts = self.cut_points(row["unit_id"], len(steps))
            if not cuts and not self.config.dpo_pairs:
                out[row["unit_id"]] = attempt_row(row["unit_id"], row["problem_id"], self.name, "too_short",
                                                  detail=f"{len(steps)} step(s): no cut point before the last step")
                continue
            branches += [_Branch(index, k, r) for k in cuts for r in range(self.config.rounds)]
        errors = self._grow(records, branches)
        self._judge(records, branches)
        drafts: dict[str, _Draft] = {}
        for index, row in enumerate(records):
            if row["unit_id"] in out:
                continue
            mine = [b for b in branches if b.unit == index]
            if index in errors:
                out[row["unit_id"]] = attempt_row(row["unit_id"], row["problem_id"], self.name, None,
                                                  candidates=len(mine), generated_tokens=sum(b.tokens for b in mine),
                                                  error=errors[index], calculator=_calculator(mine))
                continue
            drafts[row["unit_id"]] = self._draft(row, mine)
        # every chosen step of the batch goes to the verifier at once
        checks = self.verifier.check_units({key: [c.step for c in d.candidates] for key, d in drafts.items()},
                                           self.config.max_pairs_per_solution)
        for key, draft in drafts.items():
            out[key] = self._attempt(draft, checks[key])
        return attempts_frame([out[r["unit_id"]] for r in records])

    def _prefix(self, row: dict[str, Any], branch: _Branch, level: int) -> Prefix:
        question = self.problems.loc[row["problem_id"], "question"]
        prefix = join_steps(list(row["steps"])[: branch.cut]) + branch.text
        request_id = f"{row['unit_id']}@{branch.cut}" + (f"#{branch.round}@{level}" if level else "")
        return Prefix(request_id, question, prefix)

    def _grow(self, records: list[dict[str, Any]], branches: list[_Branch]) -> dict[int, str]:
        """Generate every branch step by step; returns generation errors by unit."""
        errors: dict[int, str] = {}
        level = 0
        while True:
            active = [b for b in branches if not b.done and b.unit not in errors]
            if not active:
                return errors
            if level == 0:  # all rounds of a cut share one request: n samples of the first step
                groups: dict[tuple[int, int], list[_Branch]] = {}
                for b in active:
                    groups.setdefault((b.unit, b.cut), []).append(b)
                prefixes = [self._prefix(records[u], bs[0], 0) for (u, _), bs in groups.items()]
                results = self.continuer.generate(prefixes, self._sampling(0, self.config.rounds))
                for bs, result in zip(groups.values(), results):
                    self._extend(bs, result, errors, records, level)
            else:
                prefixes = [self._prefix(records[b.unit], b, level) for b in active]
                results = self.continuer.generate(prefixes, self._sampling(level, 1))
                for b, result in zip(active, results):
                    self._extend([b], result, errors, records, level)
            level += 1

    def _extend(self, branches: list[_Branch], result: Continued, errors: dict[int, str],
                records: list[dict[str, Any]], level: int) -> None:
        if not result.ok:
            errors[branches[0].unit] = result.error
            return
        original = len(records[branches[0].unit]["steps"])
        self.count_tokens(result.tokens)
        # a server that reports usage per request only (n > 1 over HTTP) gets its total shared out
        share = result.tokens // max(len(result.completions), 1)
        for branch, completion in zip(branches, result.completions):
            branch.tokens += completion.completion_tokens if completion.completion_tokens is not None else share
            branch.text += completion.text
            branch.completions.append(completion)
            ended = self._why_ended(completion)
            if ended == STOP_LENGTH:
                branch.done, branch.dropped = True, "unfinished"
            elif ended == STOP_EOS:
                branch.done = True
            elif ended == STEP_STOP and completion.text.strip():
                branch.text += STEP_STOP
                if branch.cut + level + 1 >= original + self.config.extra_steps:
                    branch.done, branch.dropped = True, "over_long"
            else:
                branch.done, branch.dropped = True, "no_answer"

    def _why_ended(self, completion: Any) -> str | None:
        """STOP_LENGTH, STOP_EOS or STEP_STOP; from the backend's stop_reason, guessed only when it has none."""
        if completion.finish_reason == "length" or completion.stop_reason == STOP_LENGTH:
            return STOP_LENGTH
        if completion.stop_reason in (STOP_EOS, STEP_STOP):
            return completion.stop_reason
        if completion.stop_reason is not None:
            return STOP_EOS  # another stop string or a stop token: the solution ended there
        # unknown (a server that does not report it): an explicitly stated answer ends the solution
        return STOP_EOS if self.answers.extract(completion.text) is not None else STEP_STOP

    def _judge(self, records: list[dict[str, Any]], branches: list[_Branch]) -> None:
        todo = [b for b in branches if b.done and b.dropped is None]
        for b in todo:
            pieces = split_steps(b.text)
            bodies = [normalized_step(p) for p in pieces]
            if len(bodies) != len(set(bodies)):
                b.dropped = "repeats_a_step"
        todo = [b for b in todo if b.dropped is None]
        labels = self.answers.label_many(
            [(self.problems.loc[records[b.unit]["problem_id"], "answer"], b.text, "stop") for b in todo])
        for b, label in zip(todo, labels):
            if label.outcome in ("check_failed", "bad_gold"):
                b.dropped = f"unjudged_{label.outcome}"
            elif label.outcome != "wrong":
                b.dropped = "still_right" if label.correct else label.outcome

    def _draft(self, row: dict[str, Any], branches: list[_Branch]) -> _Draft:
        """A unit's candidate pairs before their chosen steps are checked: per cut, the first usable round.

        Cuts are examined until the per-solution cap is reached; with ``verify_action`` drop every cut is,
        since a candidate the check rejects leaves room for a later one.
        """
        steps = list(row["steps"])
        cap = self.config.max_pairs_per_solution if self.config.verify_action != "drop" else None
        draft, seen = _Draft(row, branches), set()
        for cut in sorted({b.cut for b in branches}):
            for branch in sorted((b for b in branches if b.cut == cut and b.dropped is None), key=lambda b: b.round):
                divergence = first_divergence(steps, cut, branch.text)
                if divergence is None:
                    branch.dropped = "same_as_original"
                    continue
                error_step, rejected = divergence
                if (error_step, normalized_step(rejected)) in seen:
                    branch.dropped = "duplicate_negative"
                    continue
                seen.add((error_step, normalized_step(rejected)))
                step = ChosenStep(f"{row['unit_id']}@{cut}", row["problem_id"], steps[:error_step], steps[error_step])
                draft.candidates.append(_Candidate(error_step, rejected, step))
                break
            if cap and len(draft.candidates) >= cap:
                break
        return draft

    def _attempt(self, draft: _Draft, checks: UnitChecks) -> dict[str, Any]:
        row, branches = draft.row, draft.branches
        tokens = sum(b.tokens for b in branches)
        problem = self.problems.loc[row["problem_id"]]
        steps = list(row["steps"])
        messages = prompt_messages_of(self.template.render(question=problem["question"]))
        common = dict(problem_id=row["problem_id"], question=problem["question"], answer=problem["answer"],
                      prompt_messages=messages, source=problem.get("source"), model=self.generator.model,
                      localizer="step-controlled",
                      # a correct rollout is the policy's own text; a unit without a prompt is a reference solution
                      chosen_source="policy" if isinstance(row.get("prompt"), str) else "reference")
        if checks.error is not None:  # the verifier failed: the unit is redone on resume
            return attempt_row(row["unit_id"], row["problem_id"], self.name, None, candidates=len(branches),
                               generated_tokens=tokens, error=checks.error, detail=checks.describe(),
                               calculator=_calculator(branches), **checks.columns())
        pairs = []
        for i in checks.kept:
            candidate = draft.candidates[i]
            k = candidate.error_step
            pairs.append(make_pair(**common, prefix_steps=steps[:k], chosen=join_steps(steps[k:]),
                                   rejected=candidate.rejected, kind="scdpo", error_step=k,
                                   chosen_verified=checks.verified(i),
                                   sampling={"schedule": [self.config.temperature(i) for i in range(4)],
                                             "top_p": self.config.top_p, "rounds": self.config.rounds,
                                             "seed": self.config.seed} | (
                                       {"calculator": True} if self.config.calculator else {})))
        wrong_completion = row.get("wrong_completion")
        if self.config.dpo_pairs and isinstance(wrong_completion, str) and wrong_completion.strip():
            pairs.append(make_pair(**common, prefix_steps=[], chosen=join_steps(steps), rejected=wrong_completion,
                                   kind="dpo", error_step=None, chosen_verified=None,
                                   rejected_finished=row.get("wrong_finished") is not False))
        drops: dict[str, int] = {}
        for b in branches:
            if b.dropped:
                drops[b.dropped] = drops.get(b.dropped, 0) + 1
        accepted = sum(1 for b in branches if b.dropped is None)
        unfinished = drops.get("unfinished", 0)
        detail = (f"{len(branches)} continuations, {accepted} wrong and usable; dropped {drops or 'none'}; "
                  f"{checks.describe()}")
        outcome = "pairs" if pairs else ("all_still_right" if drops.get("still_right") == len(branches) and branches
                                         else "no_usable_negative")
        return attempt_row(row["unit_id"], row["problem_id"], self.name, outcome, detail=detail,
                           candidates=len(branches), accepted=accepted, pairs=pairs, generated_tokens=tokens,
                           unfinished=unfinished, calculator=_calculator(branches), **checks.columns())


def _calculator(branches: list[_Branch]) -> tuple[int | None, int | None]:
    """Calculator decoding's calls and changes over every step the branches generated ((None, None): off)."""
    from stepdata.generation.calculator_decoding import calculator_counts

    return calculator_counts([c for b in branches for c in b.completions])


@dataclass
class _Candidate:
    """An SCDPO pair before its chosen step is checked: where it diverges, the rejected text, the step to check."""

    error_step: int
    rejected: str
    step: ChosenStep


@dataclass
class _Draft:
    """A unit's branches and candidate pairs, between generation and the chosen-step check."""

    row: dict[str, Any]
    branches: list[_Branch]
    candidates: list[_Candidate] = field(default_factory=list)


def first_divergence(steps: list[str], cut: int, continuation: str) -> tuple[int, str] | None:
    """Where a continuation from ``steps[:cut]`` first leaves the original: (step index, rejected text).

    The continuation may repeat the original's next steps word for word (a low
    temperature often regenerates step k unchanged); those steps then belong to the
    shared prefix, and the pair's error step is the first one that differs. None when
    the continuation reproduces the original to its end (no negative).
    """
    full = join_steps(steps[:cut]) + continuation
    index, head = cut, join_steps(steps[:cut])
    while index < len(steps) and full.startswith(head + steps[index]):
        head += steps[index]
        index += 1
    rest = full[len(head):]
    if index == len(steps) or not rest.strip():
        return None
    return index, rest


def synthesis_units(rollouts: pd.DataFrame | None = None, problems: pd.DataFrame | None = None,
                    template: str = "step_by_step") -> tuple[pd.DataFrame, dict[str, int]]:
    """Units for stage 4: correct rollouts (each with one wrong rollout of its problem, for DPO pairs), or,
    given problems only, their reference solutions. Returns the units and counts of what was left out."""
    if rollouts is not None:
        ok = rollouts["error"].isna()
        right = rollouts[ok & rollouts["correct"].eq(True)]
        wrong_rows = rollouts[ok & rollouts["correct"].eq(False)]
        finished = ~wrong_rows["finish_reason"].eq("length")
        # finished wrong solutions first: a DPO rejected side that was cut at max_tokens gets no EOS
        wrong_rows = pd.concat([wrong_rows[finished], wrong_rows[~finished]])
        wrong: dict[str, list[tuple[str, bool]]] = {}
        for w in wrong_rows.itertuples(index=False):
            wrong.setdefault(w.problem_id, []).append((w.completion, w.finish_reason != "length"))
        used: dict[str, int] = {}
        rows = []
        for r in right.itertuples(index=False):
            options = wrong.get(r.problem_id, [])
            i = used.get(r.problem_id, 0)
            used[r.problem_id] = i + 1
            text, text_finished = options[i % len(options)] if options else (None, None)
            rows.append({"unit_id": r.rollout_id, "problem_id": r.problem_id, "steps": list(r.steps),
                         "wrong_completion": text, "wrong_finished": text_finished, "prompt": r.prompt})
        left = {"not_correct": int(len(rollouts) - len(right))}
        return pd.DataFrame(rows, columns=UNIT_COLUMNS), left
    if problems is None:
        raise ValueError("give a rollouts table or a problems table with reference solutions")
    partial = load_prompt(template).render(question="")[-1]["content"]
    rows, missing = [], 0
    for p in problems.itertuples(index=False):
        if not isinstance(p.solution, str) or not p.solution.strip():
            missing += 1
            continue
        text = strip_partial_overlap(partial, to_step_format(p.solution, p.answer))
        rows.append({"unit_id": f"{p.problem_id}:reference", "problem_id": p.problem_id,
                     "steps": split_steps(text), "wrong_completion": None, "wrong_finished": None})
    return pd.DataFrame(rows, columns=UNIT_COLUMNS), {"no_solution": missing}


def run_synthesize(generator: Any, units: pd.DataFrame, problems: pd.DataFrame, out: str,
                   config: SynthesizeConfig = SynthesizeConfig(), **run_options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Stage 4 run locally and resumably: attempts in ``OUT.attempts.parquet``, SCDPO (and DPO) pairs in ``out``.

    ``units``: ready units, a rollouts table or a problems table (see :class:`SynthesizeStage`);
    ``run_options`` are :class:`~stepdata.pipeline.executor.RunOptions` fields (batch_size, shard, ...).
    """
    from stepdata.pipeline.executor import LocalExecutor, split_options

    config, options = split_options(config, {"out": str(out), **run_options})
    result = LocalExecutor(options).run(SynthesizeStage(generator, problems, config),
                                                                         units)
    return result.table, result.stats
