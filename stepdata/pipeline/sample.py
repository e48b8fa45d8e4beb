"""Stage 1, error collection: n step-by-step solutions per problem, split and checked.

Every sample becomes a rollouts row, right or wrong: wrong ones feed localization
and rectification, right ones feed step-controlled negatives and the statistics.
Labels come from the run's :class:`~stepdata.answers.AnswerPolicy`: a sample cut at
``max_tokens`` is unfinished (``correct`` False, no ``pred_answer``), one that states
no answer or an unreadable one is wrong. A request that failed, an answer check that
timed out or an unusable gold answer is a row with ``error`` set (and ``correct``
null), retried when the run resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from stepdata.answers import AnswerPolicy, is_unfinished
from stepdata.generation import GenerationRequest, SamplingConfig
from stepdata.generation.calculator_decoding import CALCULATOR_HELP, calculator_summary
from stepdata.generation.types import row_error
from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.lineage import prompt_text
from stepdata.prompts import load_prompt
from stepdata.schema import ROLLOUTS
from stepdata.settings import SettingError, check_settings, setting
from stepdata.steps import split_steps

LAST_NUMBER_HELP = ("Also read a solution's last number as its answer when it states none explicitly "
                    "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
ANSWER_TIMEOUT_HELP = "Seconds an answer check may take before it counts as failed (and is retried on resume)."


def calculator_setting() -> bool:
    """The ``calculator`` setting every stage that generates has (recorded only when on, so runs made before it
    existed still resume)."""
    return setting(False, CALCULATOR_HELP, omit_default=True)


@dataclass(frozen=True)
class SampleConfig:
    """Stage 1 options; defaults follow Step-DPO's recipe (T=0.8, top_p=0.95)."""

    template: str = setting("step_by_step", "Prompt template (prompts/NAME.txt or a file).")
    n: int = setting(4, "Samples per problem.", minimum=1)
    temperature: float = setting(0.8, "Sampling temperature.", minimum=0)
    top_p: float = setting(0.95, "Nucleus sampling mass.", minimum=0, maximum=1, min_open=True)
    max_tokens: int = setting(512, "Most tokens per sample; a sample cut there is unfinished.", minimum=1)
    seed: int = setting(0, "Base seed (each request's seed derives from it and the problem id).")
    split_mode: str = setting("auto", "How a solution is split into steps.",
                              choices=("auto", "markers", "paragraphs", "lines"))
    answer_timeout: float = setting(5.0, ANSWER_TIMEOUT_HELP, minimum=0, min_open=True)
    last_number_fallback: bool = setting(False, LAST_NUMBER_HELP)
    calculator: bool = calculator_setting()

    def __post_init__(self) -> None:
        check_settings(self)
        check_greedy(self.n, self.temperature)

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed, calculator=self.calculator)


def check_greedy(n: int, temperature: float) -> None:
    """Greedy decoding (temperature 0) gives n identical samples: refused for n > 1, naming ``n``."""
    if temperature == 0 and n > 1:
        raise SettingError("n", f"n must be 1 with temperature 0 (greedy decoding gives {n} identical samples)")


class SampleStage(StageBlock):
    """Turns a batch of problems into rollouts with one engine (stage 1 as a block).

    ``engine``: a Generator, or an EngineConfig / EngineHandle built when the first batch needs it.
    """

    name, kind, key_column, Config = "sample", "rollouts", "problem_id", SampleConfig

    def __init__(self, engine: Any = None, config: SampleConfig = SampleConfig()):
        super().__init__(engine, config)
        self.template = load_prompt(config.template)
        self.sampling = config.sampling()
        self.answers = config.answer_policy()
        self.totals["generate_seconds"] = 0.0
        self.lineage = {"template": config.template}

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"lineage": self.lineage | {"model": self.model}}

    @classmethod
    def from_recorded(cls, settings: Mapping[str, Any]) -> SampleStage:
        """Stage 1 builds its engine lazily and reads no problems table: its own constructor will do."""
        block = super().from_recorded(settings)
        return cls(None, block.config)

    def request_for(self, problem: Any) -> GenerationRequest:
        return GenerationRequest.chat(str(problem.problem_id), self.template.render(question=problem.question))

    def process(self, problems: pd.DataFrame) -> pd.DataFrame:
        problems = problems.reset_index(drop=True)
        requests = [self.request_for(p) for p in problems.itertuples()]
        results = self.generator.generate(requests, self.sampling)
        stats = self.generator.last_stats
        rows: list[dict[str, Any]] = []
        to_label: list[tuple[int, tuple[Any, str, str | None]]] = []
        for problem, request, result in zip(problems.itertuples(), requests, results):
            prompt = prompt_text(None, request, result)
            base = {"problem_id": str(problem.problem_id), "prompt": prompt, "model": self.generator.model,
                    "sampling": self.sampling.as_record(), "prompt_tokens": result.prompt_tokens}
            if not result.ok:
                for i in range(self.sampling.n):
                    rows.append(base | {"rollout_id": f"{problem.problem_id}:{i}", "completion": None, "steps": None,
                                        "pred_answer": None, "correct": None, "finish_reason": None,
                                        "completion_tokens": None, "error": row_error(result.error)})
                continue
            for i, completion in enumerate(result.completions):
                rows.append(base | {
                    "rollout_id": f"{problem.problem_id}:{i}", "completion": completion.text,
                    "steps": split_steps(completion.text, self.config.split_mode), "pred_answer": None,
                    "correct": None, "finish_reason": completion.finish_reason,
                    "completion_tokens": completion.completion_tokens, "error": None,
                    "calculator_calls": completion.calculator_calls,
                    "calculator_changed": completion.calculator_changed,
                })
                to_label.append((len(rows) - 1, (problem.answer, completion.text, completion.finish_reason)))
        labels = self.answers.label_many([item for _, item in to_label])
        for (row_index, _), label in zip(to_label, labels):
            rows[row_index].update(pred_answer=label.pred_answer, correct=label.correct, error=label.error)
        if stats is not None:
            with self._lock:
                self.totals["completion_tokens"] += stats.completion_tokens
                self.totals["generate_seconds"] += stats.seconds
        return pd.DataFrame(rows, columns=ROLLOUTS.names)

    def stats(self, rollouts: pd.DataFrame) -> dict[str, Any]:
        """Accuracy (overall and per problem) from the finished table; throughput of this run."""
        judged = rollouts[rollouts["correct"].notna()]
        per_problem = judged.groupby("problem_id")["correct"].agg(["sum", "count"])
        seconds = self.totals["generate_seconds"]
        return {
            "config": asdict(self.config),
            "accuracy": round(float(judged["correct"].mean()), 4) if len(judged) else None,
            "judged_samples": len(judged),
            **{k: v for k, v in rollout_counts(rollouts).items() if k in ("unfinished", "no_answer")},
            "labels": rollout_counts(rollouts),
            "problems": int(rollouts["problem_id"].nunique()),
            "problems_with_a_correct_sample": int((per_problem["sum"] > 0).sum()),
            "problems_all_wrong": int((per_problem["sum"] == 0).sum()),
            "per_problem_accuracy": {k: round(float(r["sum"]) / r["count"], 4) for k, r in per_problem.iterrows()},
            "prompt_tokens": int(rollouts.drop_duplicates("problem_id")["prompt_tokens"].fillna(0).sum()),
            "completion_tokens": int(rollouts["completion_tokens"].fillna(0).sum()),
            "tokens_per_second_this_run": round(self.totals["completion_tokens"] / seconds, 2) if seconds else None,
        } | calculator_stats(rollouts)


def calculator_stats(table: pd.DataFrame) -> dict[str, Any]:
    """``{"calculator": {calls, changed, rows_changed, rows}}`` over a table with calculator columns ({} when no
    row used the calculator)."""
    if "calculator_calls" not in table.columns:
        return {}
    summary = calculator_summary(list(table["calculator_calls"]), list(table["calculator_changed"]))
    return {} if summary is None else {"calculator": summary}


def rollout_counts(rollouts: pd.DataFrame) -> dict[str, int]:
    """How the samples were labelled: correct, wrong (with an answer), no answer, unfinished, errors."""
    unfinished = rollouts["finish_reason"].map(is_unfinished)
    wrong = rollouts["correct"].eq(False) & ~unfinished
    return {"total": len(rollouts), "correct": int(rollouts["correct"].eq(True).sum()),
            "wrong": int((wrong & rollouts["pred_answer"].notna()).sum()),
            "no_answer": int((wrong & rollouts["pred_answer"].isna()).sum()),
            "unfinished": int(unfinished.sum()), "errors": int(rollouts["error"].notna().sum())}
