"""Stage 2, first-error localization over a rollouts table.

Every wrong rollout (``correct`` is False) becomes a localized row: the rollout
plus ``error_step`` (0-based; -1 when no error was found; null when the method
could not tell or the solution is unfinished), its ``status`` (error, no_error,
unknown, unfinished: see :data:`stepdata.schema.LOCALIZE_STATUSES`), the method,
its evidence (``rationale``; for the judge, the votes and every raw reply) and
what it cost (calls, tokens). Right and unjudged rollouts are not localized; the
summary counts them, so nothing disappears unremarked.

A rollout cut at ``max_tokens`` (``finish_reason == "length"``) in which no error
is found is ``unfinished``, never "no error": its missing steps were never judged.
The localizer is any registered one (:mod:`stepdata.localize.base`): the stage turns
rollouts (and their problems) into :class:`~stepdata.localize.base.Solution` s, asks
it once per batch, and writes its :class:`~stepdata.localize.base.Localization` s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.answers import AnswerPolicy, is_unfinished
from stepdata.localize import make_localizer, options_for, required_options
from stepdata.localize.base import (
    Localization,
    Localizer,
    Solution,
    locate_checked,
    needs_of,
)
from stepdata.localize.judge import judge_evidence
from stepdata.localize.judge_protocols import (
    JUDGE_MAX_TOKENS,
    judge_decoding,
    judge_template,
    template_fingerprint,
)
from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.sample import (
    ANSWER_TIMEOUT_HELP,
    CALCULATOR_HELP,
    LAST_NUMBER_HELP,
)
from stepdata.schema import LOCALIZE_STATUSES, LOCALIZED, status_of_error_step
from stepdata.settings import SettingError, check_settings, setting

METHOD_HELP = ("Any registered localizer. rules: exact checks of every step's arithmetic (no model); exact: rules "
               "plus each step's value against the gold steps (embedded problems); judge: an LLM judge with a "
               "majority vote; rules+judge: the judge only where rules find no false claim; rollouts: Monte-Carlo "
               "continuations from each prefix with --model as the policy; prm: a process reward model "
               "(--prm-model) scores every step, the first below --threshold is the error; human: people's labels "
               "(--labels, from `stepdata annotate`).")
PRM_FAMILY_HELP = ("prm method: how the PRM reads a solution. separator: Qwen2.5-Math-PRM (chat template, a "
                   "separator token after each step, two-class head); step_tag: Math-Shepherd (a causal LM, a tag "
                   "after each step, the good/bad tokens' logits); token_classify: a token-classification model "
                   "trained by TRL's PRMTrainer.")


@dataclass(frozen=True)
class LocalizeConfig:
    """Stage 2 options. Each localizer takes the ones its factory names (:func:`options`)."""

    method: str = setting("rules", METHOD_HELP)
    rollouts: int = setting(8, "Continuations per probed prefix (rollouts method).", minimum=1)
    search: str = setting("binary", "Prefix search of the rollouts method.", choices=("binary", "linear"))
    rules_tolerance: str = setting("written", "Rules methods. written: a claim holds when exact or true to the "
                                              "decimals it writes (16 / 3 = 5 is false); rounded: an integer may "
                                              "also be a rounding (16 / 3 = 5 holds).", choices=("written", "rounded"))
    protocol: str = setting("processbench", "The judge's prompt protocol.", choices=("processbench", "stepdpo"))
    votes: int = setting(5, "Judge replies per solution (majority vote over the readable ones).", minimum=1)
    judge_max_tokens: int = setting(JUDGE_MAX_TOKENS, "Most tokens per judge reply (its reasoning included; "
                                                      "ProcessBench's reference harness allows 8192).", minimum=1)
    judge_temperature: float | None = setting(None, "The judge's temperature. Default: 0 (greedy) with one vote, "
                                                    "1.0 with more (ProcessBench's protocol).", minimum=0)
    judge_top_p: float | None = setting(None, "The judge's nucleus sampling mass. Default: 0.9 with more than one "
                                              "vote (1.0 with one).", minimum=0, maximum=1, min_open=True)
    judge_template: str | None = setting(None, "A judge prompt file of your own (e.g. a published one), rendered "
                                               "with the protocol's variables (see prompts/README.md); recorded by "
                                               "path and SHA-256.", metavar="FILE")
    answer_timeout: float = setting(5.0, ANSWER_TIMEOUT_HELP, minimum=0, min_open=True)
    last_number_fallback: bool = setting(False, "Rollouts method: " + LAST_NUMBER_HELP)
    calculator: bool = setting(False, "Rollouts method (a localizer that samples from the policy): " + CALCULATOR_HELP,
                               omit_default=True)
    # the prm method (its own model, loaded on first use; the stage's --model is not used)
    prm_model: str | None = setting(None, "prm method: the process reward model's folder.")
    prm_family: str = setting("separator", PRM_FAMILY_HELP, choices=("separator", "step_tag", "token_classify"))
    prm_engine: str = setting("hf", "prm method: the engine that runs the PRM (hf: transformers; vllm: a vLLM "
                                    "pooling engine).", choices=("hf", "vllm"))
    threshold: float = setting(0.5, "prm method: the first step whose P(good) is below this is the error.",
                               minimum=0, maximum=1)
    prm_separator: str | None = setting(None, "prm method: the step separator (separator family: a token of the "
                                              "PRM's tokenizer, default <extra_0>; token_classify: TRL's "
                                              "step_separator, default a newline).")
    prm_step_tag: str = setting("ки", "prm method, step_tag family: the tag written after each step.")
    prm_good_token: str = setting("+", "prm method, step_tag family: the token that means a good step.")
    prm_bad_token: str = setting("-", "prm method, step_tag family: the token that means a bad step.")
    prm_batch_size: int = setting(8, "prm method: solutions per forward pass (hf engine).", minimum=1)
    prm_max_length: int | None = setting(None, "prm method: the longest input in tokens (default: the PRM's "
                                               "context); a longer solution is not scored (unknown, with an error).",
                                         minimum=1)
    # the human method: people's labels, read when the localizer is built (recorded by path and SHA-256)
    labels: str | None = setting(None, "human method: the people's labels: the JSON lines file the page of "
                                       "`stepdata annotate` saves, or Label Studio's JSON export of the tasks "
                                       "`stepdata annotate --format label-studio` wrote.", metavar="FILE")
    labels_format: str = setting("auto", "human method: how --labels is written (auto: a JSON list is Label "
                                         "Studio's export, anything else JSON lines).",
                                 choices=("auto", "jsonl", "label-studio"))

    def __post_init__(self) -> None:
        check_settings(self)
        try:
            judge_decoding(self.votes, self.judge_temperature, self.judge_top_p)
        except ValueError as exc:
            raise SettingError("judge_temperature", str(exc)) from None
        if self.judge_template is not None:
            try:
                judge_template(self.protocol, self.judge_template)
            except ValueError as exc:
                raise SettingError("judge_template", str(exc)) from None

    def judge_decoding(self) -> tuple[float, float]:
        """The judge's (temperature, top_p): the ones given, else greedy for one vote and 1.0 / 0.9 for more."""
        return judge_decoding(self.votes, self.judge_temperature, self.judge_top_p)

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def options(self, **more: Any) -> dict[str, Any]:
        """The options ``method``'s factory takes, from this config and ``more`` (e.g. ``generator``, ``template``)."""
        temperature, top_p = self.judge_decoding()
        offered = {"rules_tolerance": self.rules_tolerance, "protocol": self.protocol, "votes": self.votes,
                   "judge_max_tokens": self.judge_max_tokens, "judge_temperature": temperature,
                   "judge_top_p": top_p, "judge_template": self.judge_template, "rollouts": self.rollouts,
                   "search": self.search, "answer_policy": self.answer_policy(), "prm_model": self.prm_model,
                   "prm_family": self.prm_family, "prm_engine": self.prm_engine, "threshold": self.threshold,
                   "prm_separator": self.prm_separator, "prm_step_tag": self.prm_step_tag,
                   "prm_good_token": self.prm_good_token, "prm_bad_token": self.prm_bad_token,
                   "prm_batch_size": self.prm_batch_size, "prm_max_length": self.prm_max_length,
                   "labels": self.labels, "labels_format": self.labels_format,
                   "calculator": self.calculator} | more
        return options_for(self.method, offered)

    def recorded(self) -> dict[str, Any]:
        """What a run records of this config: the method and the options its localizer takes (the judge's
        decoding as resolved; a judge template by path and content hash, so a changed file is a changed config)."""
        options = self.options()
        recorded = {"method": self.method} | {k: v for k, v in options.items() if k != "answer_policy"}
        if recorded.get("judge_template") is not None:
            recorded["judge_template"] = template_fingerprint(recorded["judge_template"])
        else:  # the shipped template: recorded as before there was a choice
            recorded.pop("judge_template", None)
        if recorded.get("labels") is not None and Path(recorded["labels"]).is_file():
            recorded["labels"] = template_fingerprint(recorded["labels"])  # changed labels: a changed config
        if not recorded.get("calculator"):  # off: recorded as before there was a calculator
            recorded.pop("calculator", None)
        return recorded | (self.answer_policy().describe() if "answer_policy" in options else {})

    def uses_model(self) -> bool:
        return "generator" in options_for(self.method, {"generator": None})


def _value(value: Any) -> Any:
    """A table cell, None for a missing one (pandas reads a null as NaN in some columns)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def solution_for(problems: pd.DataFrame | None, solution_id: str, problem_id: str, steps: list[str], *,
                 finished: bool = True, answer_correct: bool | None = None) -> Solution:
    """What a localizer sees about ``steps``: question, gold answer, reference (the problem's solution) and meta
    from ``problems`` (indexed by problem_id; nothing when it is None or lacks the problem). One filling for
    every caller (this stage, the pair stages' chosen-step check), so a localizer sees the same fields anywhere."""
    problem: dict[str, Any] = {}
    if problems is not None and problem_id in problems.index:
        problem = {k: _value(v) for k, v in problems.loc[problem_id].items()}
    return Solution(solution_id, problem_id, problem.get("question"), steps, answer=problem.get("answer"),
                    reference=problem.get("solution"), meta=problem.get("meta"), finished=finished,
                    answer_correct=answer_correct)


def _steps(row: dict[str, Any]) -> list[str]:
    steps = row.get("steps")
    return [] if steps is None else list(steps)


class LocalizeStage(StageBlock):
    """Adds the localization columns to a batch of wrong rollouts (stage 2 as a block).

    ``localizer`` is a :class:`~stepdata.localize.base.Localizer`, a registered name
    built with ``options`` (:func:`~stepdata.localize.make_localizer`: e.g. ``generator=``
    for the judge or the policy, ``rules_tolerance=``), or None to build
    ``config.method`` from ``config`` with ``engine`` (built on first use) as its model.
    A localizer that reads the question, gold answer, reference or meta (its ``needs``)
    gets them from ``problems`` (a problem listed twice is used once), which must then
    be given. The rollouts localizer continues with the template the rollouts were
    sampled with (the input's lineage).
    """

    name, kind, key_column, Config = "localize", "localized", "rollout_id", LocalizeConfig

    def __init__(self, localizer: str | Localizer | None = None, problems: pd.DataFrame | None = None, *,
                 config: LocalizeConfig | None = None, engine: Any = None, **options: Any) -> None:
        super().__init__(engine, config)
        if localizer is not None and not isinstance(localizer, str) and options:
            raise ValueError(f"options {sorted(options)} are for building a localizer by name; this one is built")
        self._explicit = localizer is not None
        self.problems = problems.drop_duplicates("problem_id").set_index("problem_id") if problems is not None else None
        self._localizer: Localizer | None
        if isinstance(localizer, str):
            self._localizer = make_localizer(localizer, **options)
        elif localizer is not None:
            self._localizer = localizer
        else:
            required_options(self.config.method)  # an unknown name is refused now, not at the first batch
            if self.config.calculator and "calculator" not in self.config.options():
                raise ValueError(f"--calculator is for a localizer that samples from the policy (rollouts); "
                                 f"{self.config.method!r} generates nothing it would apply to")
            # a localizer without a model is built now; a model-based one when a batch needs it (loading the engine)
            self._localizer = None if self.config.uses_model() else self._from_config()
        if self._localizer is not None:
            self._check_needs(self._localizer)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if not self._explicit:
            state["_localizer"] = None  # built from the config where it runs (with that process's engine)
        return state

    def _from_config(self) -> Localizer:
        more: dict[str, Any] = {"template": self.lineage["template"]} if self.lineage.get("template") else {}
        if self.config.uses_model() and self.has_engine:
            more["generator"] = self.generator
        return make_localizer(self.config.method, **self.config.options(**more))

    def _check_needs(self, localizer: Localizer) -> None:
        if needs_of(localizer) and self.problems is None:
            raise ValueError(f"localizer {localizer.name!r} needs the problems table "
                             f"(for the problems' {', '.join(sorted(needs_of(localizer)))})")

    @property
    def localizer(self) -> Localizer:
        """The localizer, built on first use (with a model-based one, that loads the engine)."""
        if self._localizer is None:
            self._localizer = self._from_config()
            self._check_needs(self._localizer)
        return self._localizer

    @property
    def needs(self) -> frozenset[str]:
        return needs_of(self.localizer)

    @property
    def method(self) -> str:
        """The localizer's name (what rows it could not be asked about record as their method)."""
        return self._localizer.name if self._localizer is not None else self.config.method

    def settings(self) -> dict[str, Any]:
        recorded = self.config.recorded() if not self._explicit else {"method": self.method}
        settings = {"stage": self.name, **recorded}
        if self.has_engine and self.config.uses_model():
            settings |= {"model": self.model, "backend": (self.engine_description() or {}).get("backend"),
                         "engine": self.engine_description()}
        return (settings | ({"lineage": dict(self.lineage)} if self.lineage else {}) | self.problems_setting()
                | self.recorded)

    @classmethod
    def build(cls, engine: Any, problems: pd.DataFrame | None, config: LocalizeConfig) -> LocalizeStage:
        return cls(None, problems, config=config, engine=engine if config.uses_model() else None)

    def units(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        units, left_out = wrong_rollouts(table)
        # a localizer that answers from a file made for one input checks it against the whole input now
        check = getattr(getattr(self, "_localizer", None), "check_input", None)
        if check is not None:
            check([self._solution(row) for row in units.to_dict("records")])
        return units, left_out

    def _solution(self, row: dict[str, Any]) -> Solution:
        correct = _value(row.get("correct"))
        return solution_for(self.problems, row["rollout_id"], row["problem_id"], _steps(row),
                            finished=not is_unfinished(row.get("finish_reason")),
                            answer_correct=None if correct is None else bool(correct))

    @staticmethod
    def _columns(found: Localization) -> dict[str, Any]:
        return {"error_step": found.error_step, "status": found.status, "method": found.method, "votes": found.votes,
                "confidence": found.confidence, "rationale": found.rationale, "localizer_calls": found.calls,
                "localizer_tokens": found.tokens, "error": found.error}  # an error is retried on resume

    def process(self, rollouts: pd.DataFrame) -> pd.DataFrame:
        records = rollouts.to_dict("records")
        ask = [row for row in records if _steps(row)]
        if ask and self.needs:
            missing = sorted({r["problem_id"] for r in ask} - set(self.problems.index))  # type: ignore[union-attr]
            if missing:
                raise ValueError(f"problems table lacks problem_id(s) {missing[:5]} used by the rollouts")
        found = locate_checked(self.localizer, [self._solution(row) for row in ask])
        results = {row["rollout_id"]: self._columns(f) for row, f in zip(ask, found)}
        nothing = {"error_step": None, "status": "unknown", "method": self.method, "votes": None, "confidence": None,
                   "rationale": "no steps to check", "localizer_calls": 0, "localizer_tokens": 0}
        rows = [row | results.get(row["rollout_id"], nothing) for row in records]
        return pd.DataFrame(rows, columns=LOCALIZED.names)

    def stats(self, localized: pd.DataFrame) -> dict[str, Any]:
        stats = localize_stats(localized)
        report = getattr(getattr(self, "_localizer", None), "report", None)
        return stats | ({"labels": report(localized)} if report is not None else {})


def localize_stats(localized: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and method, cost, and, when the judge was asked, how many of its replies were read.

    ``localized`` counts rows with a first error (error_step >= 0); a row found
    error-free (-1) is ``no_error``, not localized.
    """
    if "status" in localized.columns:
        status = localized["status"].fillna("unknown")
    else:  # a table from before the status column
        status = localized["error_step"].map(status_of_error_step)
    found = status.eq("error")
    by_status = {s: int(status.eq(s).sum()) for s in LOCALIZE_STATUSES}
    methods = localized["method"].fillna("none").astype(str)
    stats: dict[str, Any] = {
        "localized": by_status["error"],
        "no_error": by_status["no_error"],
        "unknown": by_status["unknown"],
        "unfinished": by_status["unfinished"],
        "error_step_histogram": {int(k): int(v) for k, v in localized.loc[found, "error_step"].value_counts().sort_index().items()},
        "localizer_calls": int(localized["localizer_calls"].fillna(0).sum()),
        "localizer_tokens": int(localized["localizer_tokens"].fillna(0).sum()),
        "by_method": {str(k): int(v) for k, v in methods.value_counts().items()},
        "status_by_method": {m: {s: int(n) for s, n in status[methods == m].value_counts().items()}
                             for m in methods.unique()},
        "error_rows": int(localized["error"].notna().sum()),
    }
    judged = localized[methods.eq("judge") & localized["localizer_calls"].fillna(0).gt(0)]
    if len(judged):
        stats["judge"] = judge_stats(judged)
    return stats


def judge_stats(judged: pd.DataFrame) -> dict[str, int]:
    """What the judge answered for the rows it was asked about: readable verdicts, unreadable replies, errors."""
    evidence = [judge_evidence(r) for r in judged["rationale"]]
    return {
        "asked": len(judged),
        "readable_verdicts": int(sum(bool(v is not None and len(v) > 0) for v in judged["votes"])),
        "unreadable_replies": int(sum(e["unreadable"] for e in evidence if e)),
        "errors": int(judged["error"].notna().sum()),
    }


def describe_judge(stats: dict[str, Any]) -> str:
    """The judge's line for a summary: "judge: 38 asked, 0 readable verdicts, 190 unreadable replies, 0 errors"."""
    judge = stats.get("judge") or {"asked": 0, "readable_verdicts": 0, "unreadable_replies": 0, "errors": 0}
    return (f"judge: {judge['asked']} asked, {judge['readable_verdicts']} readable verdicts, "
            f"{judge['unreadable_replies']} unreadable replies, {judge['errors']} errors")


def wrong_rollouts(rollouts: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rollouts to localize, and counts of the ones left out (and why)."""
    correct = rollouts["correct"]
    wrong = rollouts[correct.eq(False) & rollouts["error"].isna()]
    left_out = {
        "correct": int(correct.eq(True).sum()),
        "unjudged_or_failed": int(len(rollouts) - len(wrong) - correct.eq(True).sum()),
    }
    return wrong.reset_index(drop=True), left_out
