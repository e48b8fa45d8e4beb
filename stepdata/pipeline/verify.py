"""Checking chosen steps: a pair stage asks a verifier whether each chosen step is right.

Why: a right final answer can follow a wrong step (in the quickstart about a quarter of
the chosen steps fail the exact check), and a pair that teaches a wrong step as the
better one does harm; Step-DPO had GPT-4 or people check its chosen steps. Here the
verifier is the user's choice (``verify``):

- ``auto`` (the default, the behaviour before verifiers could be chosen): the chosen step
  alone, against the gold steps where the problem has them (embedded problems), else by its
  arithmetic claims (True when all hold, False when one is false, None when it states none);
- ``none``: nothing is checked (``chosen_verified`` stays null);
- any registered localizer (``exact``, ``rules``, ``judge``, a PRM, a plugin's), asked once per
  batch about every chosen step of the batch (one ``locate`` call).

How a localizer is asked: a :class:`~stepdata.localize.base.Solution` whose steps are the
shared prefix plus the chosen step (the chosen step in the context it was written in), the
problem's question, gold answer, reference and meta filled as the localize stage fills them,
and ``finished=False`` (a partial solution: stopping after the chosen step is no error).
Its answer becomes a verdict (:func:`chosen_verdict`): an error at the chosen step's index
is False; no error found ("no_error" or "unfinished") is True; an error inside the prefix is
None (the verifier doubts the prefix, so it says nothing about the chosen step; counted as
``prefix_doubted``); "unknown" is None (``unknown``); a failure (``Localization.error``) is
None (``failed``) and makes the unit's attempt row an error, retried on resume.

What is done with a verdict (``verify_action``): ``mark`` records it in the pair's
``chosen_verified``; ``drop`` also leaves out the chosen steps judged False (the rest are
marked). Each attempt row records what the checks cost (``verify_calls``, ``verify_tokens``)
and one record per checked step (``verify_checks``), from which the summary counts them.

The verifier's options (``verify_options``) go to its factory by name and are checked
against its signature when the config is made. A model-based verifier (a factory that takes
``generator``) uses the stage's policy engine unless ``verify_model`` names another one,
which is built only when a batch first has a chosen step to check, and never travels to a
cluster worker (only its settings do).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stepdata.generation.engine_config import EngineConfig
from stepdata.keyvalues import KeyValueError, parse_key_values
from stepdata.localize import (
    available_localizers,
    check_options,
    make_localizer,
    options_for,
)
from stepdata.localize.base import Localization, Localizer, locate_checked
from stepdata.localize.exact import gold_values, verify_step
from stepdata.pipeline.localize import solution_for
from stepdata.secrets import is_secret_name
from stepdata.settings import SettingError, options_mapping, setting

log = logging.getLogger(__name__)

SPECIAL = ("auto", "none")
ACTIONS = ("mark", "drop")
LEGACY = ("mark", "drop")  # the values ``verify`` had when it was an action: read as verify auto + that action
# options a stage offers the verifier's factory itself (it takes the ones its signature names)
STAGE_OPTIONS = ("generator", "template", "answer_policy")
# why a verdict is what it is; the last three are the reasons of None
REASONS = ("accepted", "rejected", "prefix_doubted", "unknown", "failed")
UNDECIDED = ("prefix_doubted", "unknown", "failed")

VERIFY_HELP = ("How each chosen step is checked. auto: against the gold steps where the problem has them, else by "
               "its arithmetic claims (the step alone); none: not checked; or any registered localizer (exact, rules, "
               "judge, ...), asked about the prefix plus the chosen step. Old spellings mark/drop mean auto with that "
               "--verify-action.")
_warned: set[str] = set()


@dataclass(frozen=True)
class VerifySettings:
    """The chosen-step check of a pair stage (module doc); RectifyConfig and SynthesizeConfig inherit it."""

    verify: str = setting("auto", VERIFY_HELP)
    verify_action: str = setting("mark", "mark: record each verdict in chosen_verified; drop: also leave out (and "
                                         "count) the chosen steps judged wrong.", choices=ACTIONS)
    verify_options: Mapping[str, Any] = setting((), "An option of the --verify localizer, e.g. votes=3, "
                                                    "protocol=stepdpo (values read as YAML scalars; a recipe gives a "
                                                    "mapping). Repeatable.", cli="--verify-option", multiple=True,
                                                metavar="KEY=VALUE")
    verify_model: str | None = setting(None, "A separate engine for a model-based verifier (the judge): model folder "
                                             "or served model name (default: the stage's own policy engine).")
    verify_backend: str | None = setting(None, "The verifier engine's backend (default: openai with "
                                               "--verify-base-url, else the policy's).",
                                         choices=("auto", "vllm", "openai", "hf"))
    verify_base_url: str | None = setting(None, "OpenAI-compatible server of the verifier engine (its key from "
                                                "$OPENAI_API_KEY, or the variable --verify-engine-option "
                                                "api_key_env=NAME names).")
    verify_tokenizer: str | None = setting(None, "Local tokenizer for the verifier engine's completions endpoint "
                                                 "(openai backend).")
    verify_engine_options: tuple[str, ...] = setting((), "Passed to the verifier engine's backend, e.g. "
                                                         "dtype=float32 (JSON values). Repeatable.",
                                                     cli="--verify-engine-option", multiple=True, metavar="KEY=VALUE")

    def __post_init__(self) -> None:
        if self.verify in LEGACY:
            action = "drop" if self.verify == "drop" else self.verify_action
            if self.verify not in _warned:
                _warned.add(self.verify)
                log.warning("verify: %s is the old spelling of verify: auto with verify_action: %s "
                            "(--verify auto --verify-action %s)", self.verify, action, action)
            object.__setattr__(self, "verify", "auto")
            object.__setattr__(self, "verify_action", action)
        object.__setattr__(self, "verify_options", options_mapping(self.verify_options, "verify_options"))
        self._check_verifier()

    def _check_verifier(self) -> None:
        """Refuse a verifier, option or engine setting that cannot work, naming the setting, before any work."""
        engine_given = [name for name in ("verify_backend", "verify_base_url", "verify_tokenizer")
                        if getattr(self, name) is not None] + (["verify_engine_options"] if self.verify_engine_options
                                                                else [])
        if self.verify_model is None and engine_given:
            raise SettingError(engine_given[0], f"{engine_given[0]} describes the verifier's own engine: give "
                                                "verify_model too (--verify-model)")
        try:
            engine_options = parse_key_values(self.verify_engine_options, option="--verify-engine-option")
        except KeyValueError as exc:
            raise SettingError("verify_engine_options", str(exc)) from None
        for name, options in (("verify_options", self.verify_options), ("verify_engine_options", engine_options)):
            secret = [key for key in options if is_secret_name(key)]
            if secret:
                raise SettingError(name, f"{name}: {secret[0]!r} is a secret; secrets come from the environment only "
                                         "(the openai backend reads $OPENAI_API_KEY, or the variable api_key_env names)")
        if self.verify in SPECIAL:
            if self.verify_options:
                raise SettingError("verify_options", f"verify_options are options of the localizer --verify names; "
                                                     f"--verify {self.verify} takes none")
            if self.verify_model is not None:
                raise SettingError("verify_model", f"--verify {self.verify} uses no model")
            if self.verify == "none" and self.verify_action == "drop":
                raise SettingError("verify_action", "verify_action drop needs a verifier (verify is none)")
            return
        if self.verify not in available_localizers():
            raise SettingError("verify", f"verify must be auto, none or a registered localizer "
                                         f"({', '.join(available_localizers())}; --plugin MODULE registers more), "
                                         f"got {self.verify!r}")
        given_by_stage = [key for key in self.verify_options if key in ("generator", "answer_policy")]
        if given_by_stage:
            raise SettingError("verify_options", f"verify_options: {given_by_stage[0]!r} is given by the stage (a "
                                                 "separate verifier engine: --verify-model)")
        try:
            check_options(self.verify, self.verify_options, provided=STAGE_OPTIONS)
        except ValueError as exc:
            raise SettingError("verify_options", f"verify_options: {exc}") from None
        if self.verify_model is not None and not self.verifier_uses_model():
            raise SettingError("verify_model", f"verifier {self.verify!r} takes no generator: a model of its own is "
                                               "one of its options (--verify-option)")

    def verifier_uses_model(self) -> bool:
        """True when the verifier is a localizer whose factory takes ``generator`` (a model it samples from)."""
        return self.verify not in SPECIAL and "generator" in options_for(self.verify, {"generator": None})

    def verify_engine(self, policy: EngineConfig | None = None) -> EngineConfig | None:
        """The verifier's own engine as settings (None: it has none, or uses the policy's)."""
        if self.verify_model is None:
            return None
        backend = self.verify_backend or ("openai" if self.verify_base_url else policy.backend if policy else "auto")
        return EngineConfig(backend=backend, model=self.verify_model, base_url=self.verify_base_url,
                            tokenizer=self.verify_tokenizer, engine_options=tuple(self.verify_engine_options))


@dataclass(frozen=True)
class ChosenStep:
    """One chosen step to check: the steps before it (shared with the rejected side) and the problem it solves.

    ``check_id`` is stable across runs and batches (a model-based verifier's request id and seed come from it).
    """

    check_id: str
    problem_id: str
    prefix: Sequence[str]
    chosen: str

    @property
    def index(self) -> int:
        """The chosen step's index in the solution (0-based)."""
        return len(self.prefix)


@dataclass(frozen=True)
class ChosenVerdict:
    """What the verifier said about one chosen step: ``verified`` (the pair's chosen_verified) and why
    (``reason``, one of :data:`REASONS`), with the localizer's own answer and its cost."""

    verified: bool | None
    reason: str
    method: str
    status: str | None = None
    error_step: int | None = None
    note: str | None = None
    calls: int = 0
    tokens: int = 0
    error: str | None = None
    evidence: dict[str, Any] | None = None  # the localizer's whole evidence (a PRM's step scores, a judge's replies)

    def record(self, step: ChosenStep, dropped: bool) -> dict[str, Any]:
        """The attempts table's record of this check (one item of ``verify_checks``)."""
        return {"check_id": step.check_id, "step": step.index, "chosen": step.chosen, "verified": self.verified,
                "reason": self.reason, "method": self.method, "status": self.status, "error_step": self.error_step,
                "note": None if self.note is None else self.note[:500], "evidence": self.evidence, "calls": self.calls,
                "tokens": self.tokens, "error": self.error, "dropped": dropped}


def chosen_verdict(found: Localization, index: int) -> ChosenVerdict:
    """A localizer's answer about prefix + chosen step (chosen at ``index``) as a verdict on the chosen step."""
    cost = {"method": found.method, "status": found.status, "error_step": found.error_step,
            "note": found.note, "evidence": found.evidence or None, "calls": found.calls, "tokens": found.tokens}
    if found.error is not None:
        return ChosenVerdict(None, "failed", error=found.error, **cost)
    if found.status == "error" and found.error_step == index:
        return ChosenVerdict(False, "rejected", **cost)
    if found.status == "error" and found.error_step is not None and found.error_step < index:
        return ChosenVerdict(None, "prefix_doubted", **cost)
    if found.status in ("no_error", "unfinished"):
        return ChosenVerdict(True, "accepted", **cost)
    return ChosenVerdict(None, "unknown", **cost)  # "unknown", or an error step past the steps it was shown


def auto_verdict(step: ChosenStep, meta: Any) -> ChosenVerdict:
    """``auto``: the chosen step alone, against the gold steps where there are any, else by its arithmetic claims."""
    method = "exact" if gold_values(meta) is not None else "rules"
    verified = verify_step(step.chosen, step.index, meta)
    if verified is None:
        return ChosenVerdict(None, "unknown", method, note="no arithmetic claim to check")
    return ChosenVerdict(verified, "accepted" if verified else "rejected", method)


@dataclass
class UnitChecks:
    """The checks of one unit's candidate chosen steps (in the stage's order) and which become pairs."""

    verdicts: list[ChosenVerdict | None]  # per candidate; None: not checked (verify none, or past a mark cap)
    kept: list[int]  # the candidates that become pairs, in order
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(v.calls for v in self.verdicts if v is not None)

    @property
    def tokens(self) -> int:
        return sum(v.tokens for v in self.verdicts if v is not None)

    @property
    def error(self) -> str | None:
        """The first failure (the unit's row error, retried on resume), None when every check answered."""
        failed = next((v for v in self.verdicts if v is not None and v.error is not None), None)
        return None if failed is None else f"verify ({failed.method}): {failed.error}"

    def verified(self, index: int) -> bool | None:
        verdict = self.verdicts[index]
        return None if verdict is None else verdict.verified

    def columns(self) -> dict[str, Any]:
        """The attempts-row columns of these checks."""
        return {"verify_calls": self.calls, "verify_tokens": self.tokens, "verify_checks": self.records}

    def describe(self) -> str:
        """One line for the attempt's detail: what was checked, the verdicts, what was dropped."""
        if not self.records:
            return "chosen steps not checked"
        counts = check_counts(self.records)
        undecided = ", ".join(f"{counts[r]} {r.replace('_', ' ')}" for r in UNDECIDED if counts[r])
        text = (f"{counts['checked']} chosen step(s) checked by {self.records[0]['method']}: {counts['true']} "
                f"accepted, {counts['false']} rejected, {counts['none']} undecided" + (f" ({undecided})" if undecided
                                                                                       else ""))
        return text + (f"; {counts['dropped']} dropped" if counts["dropped"] else "")


class ChosenVerifier:
    """Checks chosen steps as ``settings`` say (module doc); one ``locate`` call per batch.

    ``generator`` returns the engine a model-based verifier samples from (the stage's policy, or its own
    verifier engine): called only when a batch has a chosen step to check. ``problems`` (indexed by
    problem_id) fills each step's question, gold answer, reference and meta; ``template`` and
    ``answer_policy`` are the stage's, offered to a verifier whose factory takes them.
    """

    def __init__(self, settings: VerifySettings, problems: pd.DataFrame, generator: Callable[[], Any] | None = None,
                 *, template: str | None = None, answer_policy: Any = None) -> None:
        self.settings, self.problems, self._generator = settings, problems, generator
        self.template, self.answer_policy = template, answer_policy
        self._localizer: Localizer | None = None

    @property
    def name(self) -> str:
        return self.settings.verify

    @property
    def localizer(self) -> Localizer:
        """The verifier as a localizer, built on first use (a model-based one gets its engine then)."""
        if self._localizer is None:
            offered: dict[str, Any] = {"template": self.template, "answer_policy": self.answer_policy}
            if self.settings.verifier_uses_model():
                if self._generator is None:
                    raise ValueError(f"verifier {self.name!r} samples from a model: the stage has no engine "
                                     "(give --model or --verify-model)")
                offered["generator"] = self._generator()
            offered = {k: v for k, v in options_for(self.name, offered).items() if v is not None}
            self._localizer = make_localizer(self.name, **(offered | dict(self.settings.verify_options)))
        return self._localizer

    def check(self, steps: Sequence[ChosenStep]) -> list[ChosenVerdict]:
        """One verdict per step, in order (a localizer verifier is asked once, about all of them)."""
        if not steps or self.name == "none":
            return []
        if self.name == "auto":
            return [auto_verdict(s, self._meta(s.problem_id)) for s in steps]
        solutions = [solution_for(self.problems, s.check_id, s.problem_id, [*s.prefix, s.chosen], finished=False)
                     for s in steps]
        found = locate_checked(self.localizer, solutions)
        return [chosen_verdict(f, s.index) for s, f in zip(steps, found)]

    def _meta(self, problem_id: str) -> Any:
        if problem_id not in self.problems.index:
            return None
        meta = self.problems.loc[problem_id].get("meta")
        return None if isinstance(meta, float) else meta  # a missing meta reads as NaN

    def check_units(self, units: Mapping[str, Sequence[ChosenStep]], cap: int | None) -> dict[str, UnitChecks]:
        """Check every unit's candidate chosen steps in one call and pick the ones that become pairs.

        Candidates are in the stage's order; at most ``cap`` become pairs per unit. With ``mark`` only
        the candidates that become pairs are checked (the first ``cap``); with ``drop`` every candidate
        is, and the first ``cap`` not judged False are kept.
        """
        action = self.settings.verify_action
        asked: dict[str, list[int]] = {}
        for key, candidates in units.items():
            if self.name == "none":
                asked[key] = []
            elif action == "drop" or cap is None:
                asked[key] = list(range(len(candidates)))
            else:
                asked[key] = list(range(min(cap, len(candidates))))
        flat = [units[key][i] for key, indices in asked.items() for i in indices]
        answers = iter(self.check(flat))
        checks: dict[str, UnitChecks] = {}
        for key, candidates in units.items():
            verdicts: list[ChosenVerdict | None] = [None] * len(candidates)
            for i in asked[key]:
                verdicts[i] = next(answers)
            kept: list[int] = []
            dropped: set[int] = set()
            for i, verdict in enumerate(verdicts):
                if action == "drop" and verdict is not None and verdict.verified is False:
                    dropped.add(i)
                    continue
                if cap is None or len(kept) < cap:
                    kept.append(i)
            records = [verdicts[i].record(candidates[i], i in dropped) for i in asked[key]]  # type: ignore[union-attr]
            checks[key] = UnitChecks(verdicts, kept, records)
        return checks


def check_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of check records: checked, true, false, none (split by reason), dropped."""
    counts = {"checked": len(records), "true": 0, "false": 0, "none": 0, **dict.fromkeys(UNDECIDED, 0), "dropped": 0}
    for record in records:
        verified = record.get("verified")
        counts["true" if verified is True else "false" if verified is False else "none"] += 1
        if verified is None:
            reason = record.get("reason")
            counts[reason if reason in UNDECIDED else "unknown"] += 1
        counts["dropped"] += bool(record.get("dropped"))
    return counts


def verify_stats(attempts: pd.DataFrame) -> dict[str, Any]:
    """The summary's chosen-step checks over an attempts table: pairs checked, verified true / false / None
    (None split: prefix_doubted, unknown, failed), dropped, and what the checks cost (calls, tokens)."""
    records: list[dict[str, Any]] = []
    for cell in attempts.get("verify_checks", pd.Series(dtype=object)):
        if isinstance(cell, str) and cell:
            records += json.loads(cell)
    counts = check_counts(records)
    return {"checked": counts["checked"], "verified_true": counts["true"], "verified_false": counts["false"],
            "verified_none": counts["none"], "none_reasons": {r: counts[r] for r in UNDECIDED},
            "dropped": counts["dropped"],
            "calls": int(attempts.get("verify_calls", pd.Series(dtype=float)).fillna(0).sum()),
            "tokens": int(attempts.get("verify_tokens", pd.Series(dtype=float)).fillna(0).sum())}


def describe_verify(stats: Mapping[str, Any]) -> str:
    """The verify line of a pair stage's summary."""
    verify = stats.get("verify") or {}
    if not verify or verify.get("verifier") == "none":
        return "chosen steps not checked"
    reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in verify["none_reasons"].items() if n)
    return (f"chosen steps checked by {verify.get('verifier')} ({verify.get('action')}): {verify['checked']}: "
            f"{verify['verified_true']} accepted, {verify['verified_false']} rejected, {verify['verified_none']} "
            f"undecided{f' ({reasons})' if reasons else ''}, {verify['dropped']} dropped; "
            f"{verify['calls']} calls, {verify['tokens']} tokens")
