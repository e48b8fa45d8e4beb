"""The PRM localizer: a process reward model scores every step; the first one below a threshold is the error.

A PRM gives each step P(step is good) (:mod:`stepdata.localize.prm_formats` says how
each family reads a solution). The first step whose score is below ``threshold``
(default 0.5) is the first error; none below is "no error" (-1), which in a
solution cut at max_tokens is "unfinished" (its missing steps were never scored).
Every step's score is kept in the evidence (``step_scores``), so a different
threshold can be applied later without asking the model again.

Two engines (``prm_engine``): ``hf`` (transformers, :mod:`.prm_hf`) and ``vllm``
(a pooling engine, :mod:`.prm_vllm`). The model loads on the first ``locate``, once
per process for the same settings (a stage, a benchmark and a test that ask for
the same PRM share it), and never travels: a pickled localizer carries its settings
only, so the Ray executor can ship it and each worker loads its own.

Per-row outcomes, never a failed batch: a solution longer than the model's context
(``prm_max_length``, default the model's) is not scored, its status is "unknown"
and its ``error`` says ``too long: N tokens > max_length M`` (scoring only the steps
that fit would call the rest error-free, or leave the error unlocated without saying
so); a solution whose input cannot be built (a chat template that refuses it, a
marker count that does not match its steps) is "unknown" with the reason. A solution
without steps is "unknown" and costs nothing.
"""

from __future__ import annotations

import atexit
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stepdata.localize.base import (
    Localization,
    Solution,
    first_below,
    register_localizer,
    status_for,
)
from stepdata.localize.prm_formats import (
    FAMILIES,
    QWEN_PRM_SYSTEM,
    Encoded,
    PRMFormat,
    PRMInputError,
    make_format,
)

ENGINES = ("hf", "vllm")

# Loaded PRMs by their settings: one load per process for the same model, family and engine settings.
_LOADED: dict[tuple, tuple[Any, PRMFormat]] = {}
_LOADING = threading.Lock()


def close_prm_engines() -> None:
    """Release every PRM this process loaded (a vLLM engine's worker processes included)."""
    with _LOADING:
        loaded = list(_LOADED.values())
        _LOADED.clear()
    for scorer, _ in loaded:
        scorer.close()


atexit.register(close_prm_engines)


def softmax_column(logits: Any, column: int) -> list[float]:
    """P(class ``column``) per row of two-logit rows, computed stably in float64."""
    scores = []
    for row in logits:
        a, b = float(row[0]), float(row[1])
        high = max(a, b)
        ea, eb = math.exp(a - high), math.exp(b - high)
        scores.append((ea if column == 0 else eb) / (ea + eb))
    return scores


@dataclass(frozen=True)
class Scored:
    """One solution's step scores (P(good) per step) and the tokens scored; or ``why`` it was not scored."""

    scores: list[float] | None
    tokens: int
    why: str | None


class PRMLocalizer:
    """Scores every step with a process reward model and calls the first one below ``threshold`` wrong.

    ``model`` is the PRM's folder; ``family`` one of ``separator``, ``step_tag``,
    ``token_classify``; ``engine`` ``hf`` or ``vllm``. ``separator`` is the step separator
    (separator family: default ``<extra_0>``; token_classify: default ``"\\n"``);
    ``step_tag``, ``good_token`` and ``bad_token`` are the step_tag family's markers.
    ``system`` is the separator family's system message (default: the one in
    Qwen2.5-Math-PRM's card). ``engine_options`` go to the engine (``dtype``, vLLM's
    ``max_num_seqs``, ...). As a :class:`~stepdata.localize.base.Localizer` ("prm") it
    reads the question.
    """

    name = "prm"
    needs = ("question",)

    def __init__(self, model: str, *, family: str = "separator", engine: str = "hf", threshold: float = 0.5,
                 separator: str | None = None, step_tag: str = "ки", good_token: str = "+", bad_token: str = "-",
                 batch_size: int = 8, max_length: int | None = None, system: str | None = QWEN_PRM_SYSTEM,
                 engine_options: dict[str, Any] | None = None) -> None:
        if not model:
            raise ValueError("the prm localizer needs prm_model (--prm-model: the process reward model's folder)")
        if family not in FAMILIES:
            raise ValueError(f"unknown prm_family {family!r}; expected one of {list(FAMILIES)}")
        if engine not in ENGINES:
            raise ValueError(f"unknown prm_engine {engine!r}; expected one of {list(ENGINES)}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1] (it is compared with P(step is good)), got {threshold}")
        if batch_size < 1 or (max_length is not None and max_length < 1):
            raise ValueError("prm_batch_size and prm_max_length must be >= 1")
        self.model, self.family, self.engine, self.threshold = str(model), family, engine, float(threshold)
        self.markers = {"separator": separator, "step_tag": step_tag, "good_token": good_token, "bad_token": bad_token,
                        "system": system}
        self.batch_size, self.max_length = batch_size, max_length
        self.engine_options = dict(engine_options or {})
        self._loaded: tuple[Any, PRMFormat] | None = None

    # -- the model, loaded on first use --------------------------------------------------------

    def _key(self) -> tuple:
        return (self.engine, self.model, self.family, self.max_length, tuple(sorted(self.markers.items())),
                tuple(sorted((k, repr(v)) for k, v in self.engine_options.items())))

    def _load(self) -> tuple[Any, PRMFormat]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model)
        markers = {k: v for k, v in self.markers.items() if k != "system" or self.family == "separator"}
        form = make_format(self.family, tokenizer, **markers)  # a bad marker fails before the model loads
        if self.engine == "hf":
            from stepdata.localize.prm_hf import HFScorer

            label_ids = [form.good_id, form.bad_id] if self.family == "step_tag" else []  # type: ignore[attr-defined]
            scorer: Any = HFScorer(self.model, self.family, label_ids=label_ids, max_length=self.max_length,
                                   **self.engine_options)
        else:
            from stepdata.localize.prm_vllm import VLLMScorer

            labels = form.label_tokens if self.family == "step_tag" else []  # type: ignore[attr-defined]
            scorer = VLLMScorer(self.model, self.family, label_tokens=labels, max_length=self.max_length,
                                **self.engine_options)
        return scorer, form

    @property
    def loaded(self) -> tuple[Any, PRMFormat]:
        """(the scorer, the input format), loaded now if this process has not loaded them for these settings
        (or another localizer sharing them closed them)."""
        with _LOADING:
            key = self._key()
            if key not in _LOADED:
                _LOADED[key] = self._load()
            self._loaded = _LOADED[key]
        return self._loaded

    def close(self) -> None:
        """Release this PRM's model (for every localizer of this process that shares it)."""
        with _LOADING:
            loaded = _LOADED.pop(self._key(), None)
        self._loaded = None
        if loaded is not None:
            loaded[0].close()

    def __getstate__(self) -> dict[str, Any]:
        """The settings only: a loaded model is not data (the receiving process loads its own)."""
        return self.__dict__ | {"_loaded": None}

    # -- locating --------------------------------------------------------------------------------

    def _evidence(self, scores: list[float] | None, summary: str, **more: Any) -> dict[str, Any]:
        # the whole evidence (every step's score at full precision) is what the localized table's rationale
        # holds, so a threshold can be re-applied to a saved table without asking the model again
        return {"summary": summary, "step_scores": scores, "threshold": self.threshold, "family": self.family,
                "engine": self.engine, "model": self.model} | more

    def _unknown(self, why: str, tokens: int = 0) -> Localization:
        """A solution the PRM could not score. Why is a property of the input (too long, NaN scores, a marker
        written inside a step): asking again gives the same answer, so it is an outcome, not an error to retry."""
        return Localization(None, "unknown", evidence=self._evidence(None, f"not scored: {why}", not_scored=why),
                            method=self.name, calls=0, tokens=tokens)

    def verdict(self, scores: list[float], solution: Solution, tokens: int) -> Localization:
        """The first-error rule over a solution's step scores."""
        error_step, status = status_for(first_below(scores, self.threshold), solution.finished)
        if status == "error":
            confidence: float | None = 1 - scores[error_step]  # type: ignore[index]
            found = f"first below {self.threshold:g}: step {error_step + 1}"  # type: ignore[operator]
        else:
            confidence = min(scores) if status == "no_error" else None
            found = f"none below {self.threshold:g}" + ("; cut at max_tokens" if status == "unfinished" else "")
        summary = f"PRM step scores {' '.join(f'{s:.2f}' for s in scores)}; {found}"
        return Localization(error_step, status, confidence=confidence, evidence=self._evidence(scores, summary),
                            method=self.name, calls=1, tokens=tokens)

    def score(self, solutions: Sequence[Solution]) -> list[Scored]:
        """Each solution's step scores and the tokens scored, or why it was not scored (a per-row outcome)."""
        scorer, form = self.loaded
        results = [Scored(None, 0, "no steps to score") for _ in solutions]
        asked: list[int] = []
        encoded: list[Encoded] = []
        for i, solution in enumerate(solutions):
            if not solution.steps:
                continue
            try:
                e = form.encode(solution.question or "", list(solution.steps))
            except PRMInputError as exc:
                results[i] = Scored(None, 0, f"input: {exc}")
                continue
            if len(e.ids) > scorer.max_length:
                results[i] = Scored(None, 0, f"too long: {len(e.ids)} tokens > max_length {scorer.max_length}")
                continue
            asked.append(i)
            encoded.append(e)
        for i, e, logits in zip(asked, encoded, scorer.logits(encoded, self.batch_size)):
            if isinstance(logits, str):
                results[i] = Scored(None, 0, logits)
                continue
            scores = softmax_column(logits, form.good_column)
            finite = all(math.isfinite(score) for score in scores)  # a NaN is below no threshold: never "no error"
            results[i] = Scored(scores, len(e.ids), None) if finite else Scored(None, 0, "the model gave NaN scores")
        return results

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        """One forward pass per solution (batched); the first step scored below the threshold is the error."""
        if not solutions:
            return []
        answers = []
        for solution, scored in zip(solutions, self.score(solutions)):
            if scored.scores is not None:
                answers.append(self.verdict(scored.scores, solution, scored.tokens))
            elif solution.steps:
                answers.append(self._unknown(scored.why or "not scored"))
            else:  # the stage never asks about a solution without steps; nothing failed, nothing to retry
                answers.append(Localization(None, "unknown", method=self.name,
                                            evidence=self._evidence(None, "no steps to score")))
        return answers


@register_localizer("prm")
def make_prm(prm_model: str | None, prm_family: str = "separator", prm_engine: str = "hf", threshold: float = 0.5,
             prm_separator: str | None = None, prm_step_tag: str = "ки", prm_good_token: str = "+",
             prm_bad_token: str = "-", prm_batch_size: int = 8, prm_max_length: int | None = None,
             prm_system: str | None = QWEN_PRM_SYSTEM, prm_engine_options: dict[str, Any] | None = None
             ) -> PRMLocalizer:
    """The "prm" localizer, its options named as the CLI's (``--prm-model``, ``--prm-family``, ...)."""
    return PRMLocalizer(prm_model or "", family=prm_family, engine=prm_engine, threshold=threshold,
                        separator=prm_separator, step_tag=prm_step_tag, good_token=prm_good_token,
                        bad_token=prm_bad_token, batch_size=prm_batch_size, max_length=prm_max_length,
                        system=prm_system, engine_options=prm_engine_options)
