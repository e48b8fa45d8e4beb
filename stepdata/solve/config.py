"""The ``solve`` settings: one frozen Config whose fields are the command line's options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepdata.answers import AnswerPolicy
from stepdata.generation import SamplingConfig
from stepdata.pipeline.sample import (
    ANSWER_TIMEOUT_HELP,
    LAST_NUMBER_HELP,
    calculator_setting,
)
from stepdata.settings import SettingError, check_settings, options_mapping, setting

STRATEGIES = ("greedy", "sample", "best-of-n", "stepco")
SELECTIONS = ("verifier", "majority", "both")
REVISIONS = ("continue", "prompt")
AGGREGATES = ("min", "last")


@dataclass(frozen=True)
class SolveConfig:
    """How each problem is solved (README "Solving strategies"); defaults follow StepCo where it says."""

    strategy: str = setting("stepco", "greedy: one solution at temperature 0; sample: one sampled solution; "
                                      "best-of-n: n samples, one chosen by the verifier and/or by majority vote; "
                                      "stepco: one solution revised from the first step the verifier rejects.",
                            choices=STRATEGIES)
    template: str = setting("step_by_step", "Prompt template (prompts/NAME.txt or a file); must end with a "
                                            "partial assistant answer for --revision continue.")
    n: int = setting(4, "Samples per problem for best-of-n.", minimum=1)
    temperature: float = setting(0.8, "Sampling temperature (greedy uses 0).", minimum=0)
    top_p: float = setting(0.95, "Nucleus sampling mass.", minimum=0, maximum=1, min_open=True)
    max_tokens: int = setting(512, "Most tokens per generated solution or revision.", minimum=1)
    seed: int = setting(0, "Base seed (each request's seed derives from it, the problem and the iteration).")
    verifier: str = setting("rules", "The verifier: any registered localizer (exact, rules, judge, prm, rollouts, a "
                                     "plugin's), or none (best-of-n with --select majority, greedy, sample).")
    verifier_options: Mapping[str, Any] = setting((), "An option of the verifier, e.g. prm_model=DIR, votes=3 (values "
                                                      "read as YAML scalars; a recipe gives a mapping). Repeatable.",
                                                  cli="--verifier-option", multiple=True, metavar="KEY=VALUE")
    verifier_model: str | None = setting(None, "A separate engine for a model-based verifier (a judge, rollouts): "
                                               "model folder or served model name (default: the policy's engine).",
                                        omit_default=True)
    verifier_backend: str | None = setting(None, "The verifier engine's backend (default: openai with "
                                                 "--verifier-base-url, else the policy's).",
                                           choices=("auto", "vllm", "openai", "hf"), omit_default=True)
    verifier_base_url: str | None = setting(None, "OpenAI-compatible server of the verifier engine (its key from "
                                                  "$OPENAI_API_KEY or --verifier-engine-option api_key_env=NAME).",
                                            omit_default=True)
    verifier_tokenizer: str | None = setting(None, "Local tokenizer for the verifier engine's completions endpoint.",
                                              omit_default=True)
    verifier_engine_options: tuple[str, ...] = setting((), "Passed to the verifier engine's backend, e.g. "
                                                           "dtype=float32 (JSON values). Repeatable.",
                                                       cli="--verifier-engine-option", multiple=True,
                                                       metavar="KEY=VALUE", omit_default=True)
    select: str = setting("both", "best-of-n: pick by the verifier's score, by majority vote of the answers, or "
                                  "both (the row's answer is the verifier's pick; both are recorded).",
                          choices=SELECTIONS)
    prm_aggregate: str = setting("min", "best-of-n with a PRM: a solution's score is its lowest or its last step "
                                        "score.", choices=AGGREGATES)
    threshold: float = setting(0.5, "A PRM verifier rejects the first step scored below this (passed to a verifier "
                                    "whose factory takes threshold, unless --verifier-option gives it).",
                               minimum=0, maximum=1)
    max_iterations: int = setting(5, "stepco: most revisions per problem.", minimum=1)
    revision: str = setting("continue", "stepco: continue (resample from the steps before the rejected one, "
                                        "the prefix kept byte for byte) or prompt (show the attempt, name the "
                                        "doubtful step and its score, ask for a revision from it: "
                                        "--revision-template).", choices=REVISIONS)
    revision_template: str = setting("stepco_revise", "stepco --revision prompt: the template (fields question, "
                                                      "attempt, step, score; ends with a partial answer).")
    split_mode: str = setting("auto", "How a solution is split into steps.",
                              choices=("auto", "markers", "paragraphs", "lines"))
    answer_timeout: float = setting(5.0, ANSWER_TIMEOUT_HELP, minimum=0, min_open=True)
    last_number_fallback: bool = setting(False, LAST_NUMBER_HELP)
    calculator: bool = calculator_setting()

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifier_options", options_mapping(self.verifier_options, "verifier_options"))
        check_settings(self)
        if self.strategy == "best-of-n" and self.n > 1 and self.temperature == 0:
            raise SettingError("temperature", "best-of-n needs temperature > 0 (greedy decoding gives n identical "
                                              "samples)")
        if self.strategy == "stepco" and self.revision == "continue" and self.temperature == 0:
            raise SettingError("temperature", "stepco with revision continue needs temperature > 0 (a greedy "
                                              "continuation of the same prefix writes the rejected step again)")
        if self.verifier == "auto":
            raise SettingError("verifier", "verifier auto is a pair stage's chosen-step check; name a localizer")
        needs_verifier = self.strategy == "stepco" or (self.strategy == "best-of-n" and self.select != "majority")
        if self.verifier == "none" and needs_verifier:
            raise SettingError("verifier", f"strategy {self.strategy} (select {self.select}) needs a verifier: a "
                                           "registered localizer, e.g. rules or exact")
        self.verify_settings()  # an unknown verifier or option is refused now, naming the setting

    @property
    def uses_verifier(self) -> bool:
        return self.verifier != "none" and self.strategy in ("stepco", "best-of-n") and not (
            self.strategy == "best-of-n" and self.select == "majority")

    def verifier_build_options(self) -> dict[str, Any]:
        """The verifier's options, with ``threshold`` added when its factory takes one and none was given."""
        from stepdata.localize import available_localizers, options_for

        if self.verifier != "none" and self.verifier not in available_localizers():
            raise SettingError("verifier", f"verifier must be none or a registered localizer "
                                           f"({', '.join(available_localizers())}; --plugin MODULE registers more), "
                                           f"got {self.verifier!r}")
        options = dict(self.verifier_options)
        if self.verifier != "none" and "threshold" not in options:
            options |= options_for(self.verifier, {"threshold": self.threshold})
        return options

    def verify_settings(self) -> Any:
        """The verifier as the pair stages' :class:`~stepdata.pipeline.verify.VerifySettings` (checked on creation),
        so a verifier is built by name and options in one place."""
        from stepdata.pipeline.verify import VerifySettings

        engine = {"verify_model": self.verifier_model, "verify_backend": self.verifier_backend,
                  "verify_base_url": self.verifier_base_url, "verify_tokenizer": self.verifier_tokenizer,
                  "verify_engine_options": tuple(self.verifier_engine_options)}
        try:
            return VerifySettings(verify=self.verifier, verify_options=self.verifier_build_options(), **engine)
        except SettingError as exc:
            name = exc.name.replace("verify_", "verifier_") if exc.name.startswith("verify_") else exc.name
            name = "verifier" if name == "verify" else name
            raise SettingError(name, str(exc).replace("verify_", "verifier_").replace("--verify-", "--verifier-")
                               .replace("--verify ", "--verifier ")) from None

    def answer_policy(self) -> AnswerPolicy:
        return AnswerPolicy.with_options(timeout=self.answer_timeout, last_number_fallback=self.last_number_fallback)

    def sampling(self, n: int = 1) -> SamplingConfig:
        """The policy's sampling: greedy for ``greedy``, else the configured temperature; ``n`` samples."""
        temperature = 0.0 if self.strategy == "greedy" else self.temperature
        return SamplingConfig(n=n, temperature=temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              seed=self.seed, calculator=self.calculator)
