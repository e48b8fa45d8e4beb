"""``solve`` as a stage block: one row per problem, whatever the strategy (see :mod:`stepdata.solve`).

Batched per iteration: every problem of a batch still being revised goes to the engine
in one ``generate`` call and to the verifier in one ``locate`` call, so prefix caching
shares the prompts and accepted prefixes. A request, answer check or verifier that
failed makes its problem's row an ``error`` (retried on resume); the other rows stand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stepdata.evaluate import vote_key
from stepdata.generation import GenerationRequest
from stepdata.generation.continuer import Continuer, Prefix
from stepdata.generation.types import row_error
from stepdata.pipeline.block import EngineHandle, StageBlock
from stepdata.prompts import load_prompt
from stepdata.schema import SOLVED
from stepdata.solve.config import SolveConfig
from stepdata.solve.selection import majority_pick, verifier_pick
from stepdata.solve.stats import solve_stats
from stepdata.solve.verdicts import Attempt, AttemptVerifier, Verdict
from stepdata.steps import join_steps, numbered_steps, split_steps


@dataclass
class _Try:
    """One attempt at a problem: its text, steps, label and cost, then the verifier's verdict."""

    completion: str
    steps: list[str]
    finish_reason: str | None
    tokens: int
    revised_from: int | None = None  # the step a revision began at (None: a first attempt)
    answer: str | None = None
    correct: bool | None = None
    label_error: str | None = None
    verdict: Verdict | None = None
    calculator: tuple[int | None, int | None] = (None, None)  # calculator decoding's calls and changes

    def record(self, index: int) -> dict[str, Any]:
        calculator = {} if self.calculator[0] is None else {
            "calculator_calls": self.calculator[0], "calculator_changed": self.calculator[1]}
        return {"attempt": index, "revised_from": self.revised_from, "completion": self.completion,
                "answer": self.answer, "correct": self.correct, "finish_reason": self.finish_reason,
                "policy_tokens": self.tokens, **calculator,
                "verdict": None if self.verdict is None else self.verdict.record()}


@dataclass
class _Problem:
    """A problem being solved: its attempts, what stopped them, what it cost."""

    problem_id: str
    question: str
    gold: Any
    tries: list[_Try] = field(default_factory=list)
    policy_tokens: int = 0
    error: str | None = None
    stop_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.stop_reason is not None

    @property
    def last(self) -> _Try:
        return self.tries[-1]


def _calculator(completion: Any) -> tuple[int | None, int | None]:
    return completion.calculator_calls, completion.calculator_changed


def describe_score(verdict: Verdict) -> str:
    """The rejected step's score as the revision prompt states it."""
    if verdict.step_score is not None:
        return f"{verdict.step_score:.2f}"
    return f"not scored ({verdict.method or 'the verifier'} rejects it without a score)"


class SolveStage(StageBlock):
    """Solves a batch of problems with one strategy (module doc); ``problems`` must have problem_id,
    question and answer (gold), and meta for the exact verifier."""

    name, kind, key_column, Config = "solve", "solved", "problem_id", SolveConfig

    def __init__(self, engine: Any = None, config: SolveConfig = SolveConfig()) -> None:
        super().__init__(engine, config)
        self.template = load_prompt(config.template)
        self.answers = config.answer_policy()
        self.revise_template = load_prompt(config.revision_template) if (
            config.strategy == "stepco" and config.revision == "prompt") else None
        if config.strategy == "stepco" and config.revision == "continue" and not self.template.continues_assistant:
            raise ValueError(f"--revision continue needs a template that ends with a partial answer; "
                             f"{config.template!r} does not (use --revision prompt)")
        if self.revise_template is not None and not self.revise_template.continues_assistant:
            raise ValueError(f"revision template {config.revision_template!r} must end with a partial [assistant] "
                             "answer (e.g. 'Step {{step}}:')")
        self.lineage = {"template": config.template}
        self.generate_calls = 0  # engine calls this block made (one per iteration per batch)
        self._verifier: AttemptVerifier | None = None
        # a model-based verifier's own engine (settings only, built when the verifier is first asked), if any
        own = config.verify_settings().verify_engine(self.engine_config) if config.uses_verifier else None
        self._verify_handle = EngineHandle(own) if own is not None else None

    @classmethod
    def from_recorded(cls, settings: Mapping[str, Any]) -> SolveStage:
        block = super().from_recorded(settings)
        return cls(None, block.config)

    def __getstate__(self) -> dict[str, Any]:
        """A worker builds its own verifier (a loaded PRM or the engine it holds does not travel)."""
        return super().__getstate__() | {"_verifier": None}

    def close(self) -> None:
        """Release the engines this block built from settings: the policy's (when owned) and the verifier's."""
        super().close()
        if getattr(self, "_verify_handle", None) is not None:
            self._verify_handle.close()
            self._verifier = None

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"lineage": self.lineage | {"model": self.model}}

    def units(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """The problems, refused before any work when a needed column is missing or a question is empty."""
        missing = [c for c in ("problem_id", "question", "answer") if c not in table.columns]
        if missing:
            raise ValueError(f"solve needs a problems table: column(s) {missing} missing")
        empty = table["question"].isna() | (table["question"].astype(str).str.strip() == "")
        if empty.any():
            first = int(empty.to_numpy().nonzero()[0][0])
            raise ValueError(f"problems row {first} (problem_id {table['problem_id'].iloc[first]!r}): field "
                             "question is empty")
        return table, {}

    # -- one batch ------------------------------------------------------------------------------

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        problems = batch.reset_index(drop=True)
        states = [_Problem(str(p.problem_id), str(p.question), p.answer) for p in problems.itertuples()]
        verifier = self._verifier_for(problems) if self.config.uses_verifier else None
        strategy = self.config.strategy
        n = self.config.n if strategy == "best-of-n" else 1
        self._first_attempts(states, n)
        if strategy == "stepco":
            self._stepco(states, verifier)
        elif strategy == "best-of-n" and verifier is not None:
            self._verify([(s, t) for s in states if not s.done for t in s.tries], verifier)
        self.count_tokens(sum(s.policy_tokens for s in states))  # the progress line's tok/s
        return pd.DataFrame([self._row(s) for s in states], columns=SOLVED.names)

    def _verifier_for(self, problems: pd.DataFrame) -> AttemptVerifier:
        """The verifier, built once per block (a PRM or judge loads once), told this batch's problems."""
        indexed = problems.assign(problem_id=problems["problem_id"].astype(str)).drop_duplicates(
            "problem_id").set_index("problem_id")
        if self._verifier is None:
            handle = self._verify_handle
            engine = (lambda: handle.get()) if handle is not None else (lambda: self.generator)
            self._verifier = AttemptVerifier(self.config.verify_settings(), indexed, engine,
                                             template=self.config.template, answer_policy=self.answers,
                                             aggregate=self.config.prm_aggregate)
        self._verifier.use_problems(indexed)
        return self._verifier

    def _generate(self, requests: list[GenerationRequest], n: int) -> list[Any]:
        self.generate_calls += 1
        return self.generator.generate(requests, self.config.sampling(n), progress=False)

    def _first_attempts(self, states: list[_Problem], n: int) -> None:
        requests = [GenerationRequest.chat(s.problem_id, self.template.render(question=s.question)) for s in states]
        for state, result in zip(states, self._generate(requests, n)):
            if not result.ok:
                state.error = row_error(result.error)
                continue
            state.policy_tokens += result.completion_tokens_total
            share = result.completion_tokens_total // max(len(result.completions), 1)
            for completion in result.completions:
                tokens = completion.completion_tokens if completion.completion_tokens is not None else share
                state.tries.append(_Try(completion.text, split_steps(completion.text, self.config.split_mode),
                                        completion.finish_reason, tokens, calculator=_calculator(completion)))
        self._label([(s, t) for s in states if not s.done for t in s.tries])

    def _label(self, items: list[tuple[_Problem, _Try]], texts: list[str] | None = None) -> None:
        """Answers and correctness of new attempts, batched; ``texts`` (the part a revision wrote) is what is
        read, since an answer stated in a kept prefix is not one the revision reached."""
        texts = texts if texts is not None else [t.completion for _, t in items]
        labels = self.answers.label_many([(s.gold, text, t.finish_reason) for (s, t), text in zip(items, texts)])
        for (state, attempt), label in zip(items, labels):
            attempt.answer, attempt.correct, attempt.label_error = label.pred_answer, label.correct, label.error

    def _verify(self, items: list[tuple[_Problem, _Try]], verifier: AttemptVerifier) -> None:
        attempts = [Attempt(f"{s.problem_id}:{i}", s.problem_id, t.steps, t.finish_reason != "length")
                    for i, (s, t) in enumerate(items)]
        for (state, attempt), verdict in zip(items, verifier.verify(attempts)):
            attempt.verdict = verdict
            if verdict.status == "failed" and state.error is None:
                state.error = verdict.error

    # -- StepCo -----------------------------------------------------------------------------------

    def _stepco(self, states: list[_Problem], verifier: AttemptVerifier | None) -> None:
        assert verifier is not None
        revisions = 0
        while True:
            active = [s for s in states if not s.done]
            self._verify([(s, s.last) for s in active], verifier)
            to_revise = []
            for state in active:
                verdict = state.last.verdict
                if state.done:  # the verifier failed
                    continue
                if verdict.status == "accepted":
                    state.stop_reason = "accepted"
                elif verdict.status == "undecided":
                    state.stop_reason = "undecided"
                elif revisions >= self.config.max_iterations:
                    state.stop_reason = "max_iterations"
                else:
                    to_revise.append(state)
            if not to_revise:
                return
            revisions += 1
            fresh = self._revise(to_revise, revisions)
            for state, attempt in fresh:
                previous = state.tries[-2]
                if attempt.answer is not None and previous.answer is not None and \
                        vote_key(attempt.answer) == vote_key(previous.answer):
                    state.stop_reason = "answers_agree"

    def _revise(self, states: list[_Problem], iteration: int) -> list[tuple[_Problem, _Try]]:
        """One revision of every state's last attempt from its rejected step, in one engine call."""
        config = self.config
        cut = [(s, s.last.verdict.step) for s in states]
        made: list[tuple[_Problem, _Try, str]] = []
        if config.revision == "continue":
            continuer = Continuer(self.generator, self.template, self.answers)
            prefixes = [Prefix(f"{s.problem_id}:rev{iteration}", s.question, join_steps(s.last.steps[:k]), s.gold)
                        for s, k in cut]
            self.generate_calls += 1
            results = continuer.generate(prefixes, config.sampling(1))
            for (state, k), result in zip(cut, results):
                if not result.ok:
                    state.error = result.error
                    continue
                state.policy_tokens += result.tokens
                completion = result.completions[0]
                kept = list(state.last.steps[:k])
                made.append((state, _Try(join_steps(kept) + completion.text,
                                         kept + split_steps(completion.text, config.split_mode),
                                         completion.finish_reason, result.tokens, revised_from=k,
                                         calculator=_calculator(completion)), completion.text))
        else:
            assert self.revise_template is not None
            requests = [GenerationRequest.chat(f"{s.problem_id}:rev{iteration}", self.revise_template.render(
                question=s.question, attempt=numbered_steps(s.last.steps), step=str(k + 1),
                score=describe_score(s.last.verdict))) for s, k in cut]
            for (state, k), result in zip(cut, self._generate(requests, 1)):
                if not result.ok:
                    state.error = row_error(result.error)
                    continue
                state.policy_tokens += result.completion_tokens_total
                completion = result.completions[0]
                kept = list(state.last.steps[:k])
                written = ("" if k == 0 else f"Step {k + 1}:") + completion.text
                made.append((state, _Try(join_steps(kept) + written, kept + split_steps(written, config.split_mode),
                                         completion.finish_reason, result.completion_tokens_total, revised_from=k,
                                         calculator=_calculator(completion)), completion.text))
        for state, attempt, _ in made:
            state.tries.append(attempt)
        self._label([(s, t) for s, t, _ in made], [text for _, _, text in made])
        return [(s, t) for s, t, _ in made]

    # -- the row ----------------------------------------------------------------------------------

    def _row(self, state: _Problem) -> dict[str, Any]:
        strategy = self.config.strategy
        verdicts = [t.verdict for t in state.tries if t.verdict is not None]
        row: dict[str, Any] = {
            "problem_id": state.problem_id, "strategy": strategy, "model": self.model,
            "gold": None if state.gold is None or (isinstance(state.gold, float) and state.gold != state.gold)
            else str(state.gold),
            "attempts": json.dumps([t.record(i) for i, t in enumerate(state.tries)], ensure_ascii=False),
            "iterations": sum(t.revised_from is not None for t in state.tries),
            "policy_tokens": state.policy_tokens, "verifier_tokens": sum(v.tokens for v in verdicts),
            "verifier_calls": sum(v.calls for v in verdicts), "error": state.error,
            "answer": None, "correct": None, "completion": None, "stop_reason": None,
            "answer_verifier": None, "correct_verifier": None, "answer_majority": None, "correct_majority": None,
        }
        used = [t.calculator for t in state.tries if t.calculator[0] is not None]
        row["calculator_calls"] = sum(c[0] for c in used) if used else None
        row["calculator_changed"] = sum(c[1] or 0 for c in used) if used else None
        label_error = next((t.label_error for t in state.tries if t.label_error), None)
        if state.error is None and label_error is not None:
            row["error"] = state.error = label_error
        if state.error is not None or not state.tries:
            return row
        if strategy == "best-of-n":
            chosen = self._select(state, row)
            row["stop_reason"] = "selected"
        else:
            chosen = state.last
            row["stop_reason"] = state.stop_reason or "single"
        row.update(answer=chosen.answer, correct=chosen.correct, completion=chosen.completion)
        return row

    def _select(self, state: _Problem, row: dict[str, Any]) -> _Try:
        """Best-of-n: the majority's pick and the verifier's (as ``select`` says); the one the row gives."""
        tries, select = state.tries, self.config.select
        answers = [t.answer for t in tries]
        majority = tries[majority_pick(answers)]
        if select in ("majority", "both"):
            row.update(answer_majority=majority.answer, correct_majority=majority.correct)
        if select == "majority":
            return majority
        best = tries[verifier_pick([t.verdict.rank if t.verdict else 0.0 for t in tries], answers)]
        row.update(answer_verifier=best.answer, correct_verifier=best.correct)
        return best

    def stats(self, output: pd.DataFrame) -> dict[str, Any]:
        return solve_stats(output) | {"strategy": self.config.strategy, "verifier": self.config.verifier}


def run_solve(generator: Any, problems: pd.DataFrame, out: str, config: SolveConfig = SolveConfig(),
              **run_options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Solve ``problems`` locally and resumably into ``out`` (one row per problem); ``run_options`` are
    :class:`~stepdata.pipeline.executor.RunOptions` fields (batch_size, limit, progress, ...)."""
    from stepdata.pipeline.executor import LocalExecutor, split_options

    config, options = split_options(config, {"out": str(out), **run_options})
    result = LocalExecutor(options).run(SolveStage(generator, config), problems)
    return result.table, result.stats
