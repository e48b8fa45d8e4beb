"""Explicit pyarrow schemas for the four tables stepdata reads and writes.

Every stage consumes one of these tables and produces another, so the schema is
the contract between stages, notebooks and trainers. Keeping them explicit (not
inferred from a DataFrame) means a column that silently changed type in one stage
fails loudly at the write, naming the column, instead of three stages later.

Conventions: steps are indexed from 0 in data (ProcessBench's convention,
``error_step = -1`` means "no error", null means "unknown"); people are shown
"Step k" counted from 1.
"""

from __future__ import annotations

import math

import pyarrow as pa

SCHEMA_VERSION = 2

PAIR_KINDS = ("step-dpo", "scdpo", "dpo")

SAMPLING_TYPE = pa.struct(
    [
        pa.field("n", pa.int64()),
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("max_tokens", pa.int64()),
        pa.field("seed", pa.int64()),
    ]
)

PROVENANCE_TYPE = pa.struct(
    [
        pa.field("model", pa.string()),
        pa.field("sampling", pa.string()),  # JSON text: differs by stage
        pa.field("localizer", pa.string()),
    ]
)

PROBLEMS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string()),  # gold final answer as text; null when the source has none
        pa.field("solution", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("meta", pa.string()),  # JSON text
    ]
)

ROLLOUTS = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("rollout_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string()),
        pa.field("steps", pa.list_(pa.string())),
        pa.field("pred_answer", pa.string()),
        pa.field("correct", pa.bool_()),  # null when the answer could not be judged
        pa.field("finish_reason", pa.string()),
        pa.field("model", pa.string()),
        pa.field("sampling", SAMPLING_TYPE),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("error", pa.string()),  # why this row failed; null when it did not
        # calculator decoding (null without it): results the calculator gave, and those the model had wrong
        pa.field("calculator_calls", pa.int64()),
        pa.field("calculator_changed", pa.int64()),
    ]
)

# What a localizer concluded about a wrong rollout, beside its error_step:
# "error" (error_step >= 0), "no_error" (-1: no error found), "unknown" (null: the
# method could not tell) and "unfinished" (null: the solution stops before it is
# complete or was cut at max_tokens, and no error was found in the steps it has).
LOCALIZE_STATUSES = ("error", "no_error", "unknown", "unfinished")

LOCALIZED = pa.schema(
    list(ROLLOUTS)
    + [
        pa.field("error_step", pa.int64()),  # 0-based; -1 = no error; null = unknown or unfinished
        pa.field("status", pa.string()),  # one of LOCALIZE_STATUSES (see there)
        pa.field("method", pa.string()),
        pa.field("votes", pa.list_(pa.int64())),
        pa.field("confidence", pa.float64()),
        pa.field("rationale", pa.string()),
        pa.field("localizer_calls", pa.int64()),
        pa.field("localizer_tokens", pa.int64()),
    ]
)

# Who wrote a pair's chosen side. Step-DPO's point is that "policy" chosen steps are in distribution (sampled
# from the model being trained); a person's corrected step ("human") or a problem's reference solution
# ("reference") is out of distribution, which a trainer or an export may want to weigh or leave out.
CHOSEN_SOURCES = ("policy", "human", "reference")
OUT_OF_DISTRIBUTION_SOURCES = ("human", "reference")

# A pair is (prompt, chosen, rejected) where the prompt is the chat in
# ``prompt_messages`` continued by ``prefix_steps``: the last message of
# ``prompt_messages`` is the assistant's partial answer from the template (e.g.
# "Let's think step by step.\nStep 1:"), and the model's text goes on with the
# prefix steps, then with chosen or rejected. ``chosen``/``rejected`` hold what
# the pair teaches: step k only for "step-dpo", the whole rest of the solution for
# "scdpo", and the whole solution (empty prefix) for "dpo". ``chosen_full`` and
# ``rejected_full`` are the complete solutions (partial answer + prefix + rest), so
# a pair can be shown and audited without the rollouts it came from.
PAIRS = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # the problem set, e.g. "embedded", "gsm8k"
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("prompt_messages", pa.string()),  # JSON list of {"role", "content"}
        pa.field("prefix_steps", pa.list_(pa.string())),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("chosen_full", pa.string()),
        pa.field("rejected_full", pa.string()),
        pa.field("chosen_ends_solution", pa.bool_()),  # True when nothing follows chosen (it gets EOS in training)
        pa.field("rejected_ends_solution", pa.bool_()),
        pa.field("error_step", pa.int64()),
        pa.field("chosen_verified", pa.bool_()),  # the chosen step passed a checker; null = not checked
        pa.field("chosen_source", pa.string()),  # who wrote chosen: one of CHOSEN_SOURCES; null = not recorded
        pa.field("kind", pa.string(), nullable=False),
        pa.field("provenance", PROVENANCE_TYPE),
    ]
)

# What came of a unit of a pair-making stage: one vocabulary for rectify, synthesize and any
# later stage that continues solutions (null outcome: an error, retried on resume).
ATTEMPT_OUTCOMES: dict[str, str] = {
    "pairs": "at least one pair was made",
    "no_error_step": "the localizer found no first error (or none was localized): nothing to rectify",
    "unfinished": "the solution was cut at max_tokens and no error was found in what it has",
    "unknown_problem": "the unit's problem_id is not in the problems table",
    "prefix_mismatch": "the error step is past the last step, or the steps no longer join to the completion",
    "prompt_mismatch": "the template no longer renders the prompt the rollout was sampled with",
    "too_short": "no cut point before the last step",
    "no_correct_continuation": "no continuation from the correct prefix reached the gold answer",
    "no_distinct_step": "every right continuation's first step equals the rejected step or failed its check",
    "all_still_right": "every continuation from the cut points still reached the gold answer",
    "no_usable_negative": "no continuation ended wrong and usable (unfinished, no answer, repeats, duplicates)",
}

# One row per unit a pair-making stage worked on (a localized rollout for
# rectification, a correct solution for step-controlled negatives): what came of
# it, so a unit that yielded no pair is recorded and counted, never just absent.
# The pairs themselves are flattened into a pairs table when the run completes.
ATTEMPTS = pa.schema(
    [
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("outcome", pa.string()),  # one of ATTEMPT_OUTCOMES: "pairs" or why there are none
        pa.field("detail", pa.string()),
        pa.field("candidates", pa.int64()),  # continuations generated
        pa.field("accepted", pa.int64()),  # continuations that qualified
        pa.field("pairs", pa.string()),  # JSON list of pairs-table rows
        pa.field("generated_tokens", pa.int64()),
        pa.field("unfinished", pa.int64()),  # continuations cut at max_tokens (never a chosen side)
        pa.field("error", pa.string()),  # a failure to retry on resume (generation, answer check, verifier)
        pa.field("verify_calls", pa.int64()),  # what checking the chosen steps cost: the verifier's calls
        pa.field("verify_tokens", pa.int64()),  # and tokens (prompt + completion)
        pa.field("verify_checks", pa.string()),  # JSON list: one record per chosen step checked (its verdict, why)
        pa.field("calculator_calls", pa.int64()),  # calculator decoding, over the unit's continuations (null: off)
        pa.field("calculator_changed", pa.int64()),
    ]
)

# Columns added to a table kind after tables of it were written, with the value an older table reads as:
# read_table fills them, so tables (and resumable parts) written before them stay readable.
_CALCULATOR_OFF: dict[str, object] = {"calculator_calls": None, "calculator_changed": None}
# Columns only some runs fill (calculator decoding's counts): a table written without them gets nulls, so a
# writer that does not know them (code from before them, a table made by hand) still writes a valid table.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {kind: tuple(_CALCULATOR_OFF)
                                                for kind in ("rollouts", "localized", "attempts", "solved")}
ADDED_COLUMNS: dict[str, dict[str, object]] = {
    "attempts": {"verify_calls": 0, "verify_tokens": 0, "verify_checks": "[]", **_CALCULATOR_OFF},
    "pairs": {"chosen_source": None},
    "rollouts": dict(_CALCULATOR_OFF),
    "localized": dict(_CALCULATOR_OFF),
    "solved": dict(_CALCULATOR_OFF),
}

# What ``solve`` decided per problem (one row per problem): the answer it gives, how it got there (every
# attempt with the step the verifier rejected, as JSON), and what it cost (policy and verifier separately).
SOLVE_STOP_REASONS = ("single", "selected", "accepted", "answers_agree", "max_iterations", "undecided")
SOLVED = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("gold", pa.string()),
        pa.field("answer", pa.string()),  # the answer given (best-of-n both: the verifier's pick)
        pa.field("correct", pa.bool_()),  # null when it could not be judged (or the row failed)
        pa.field("answer_verifier", pa.string()),  # best-of-n: the verifier's pick
        pa.field("correct_verifier", pa.bool_()),
        pa.field("answer_majority", pa.string()),  # best-of-n: the majority vote's
        pa.field("correct_majority", pa.bool_()),
        pa.field("completion", pa.string()),  # the solution whose answer is given
        pa.field("attempts", pa.string()),  # JSON list: every attempt, its answer and the verifier's verdict
        pa.field("iterations", pa.int64()),  # stepco: revisions made
        pa.field("policy_tokens", pa.int64()),  # completion tokens the policy generated
        pa.field("verifier_tokens", pa.int64()),  # tokens the verifier reported (0 for exact and rules)
        pa.field("verifier_calls", pa.int64()),
        pa.field("stop_reason", pa.string()),  # one of SOLVE_STOP_REASONS; null when the row failed
        pa.field("error", pa.string()),  # a failure to retry on resume (generation, answer check, verifier)
        pa.field("calculator_calls", pa.int64()),  # calculator decoding over every attempt (null: off)
        pa.field("calculator_changed", pa.int64()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "rollouts": ROLLOUTS,
    "localized": LOCALIZED,
    "pairs": PAIRS,
    "attempts": ATTEMPTS,
    "solved": SOLVED,
}

# Values a column may take, checked row by row at write time.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pairs", "kind"): PAIR_KINDS,
    ("pairs", "chosen_source"): CHOSEN_SOURCES,
    ("localized", "status"): LOCALIZE_STATUSES,
    ("attempts", "outcome"): tuple(ATTEMPT_OUTCOMES),
    ("solved", "stop_reason"): SOLVE_STOP_REASONS,
}


# Columns whose value names one row: a repeat is an error when the table is written.
UNIQUE_COLUMNS: dict[str, str] = {"pairs": "pair_id"}


def status_of_error_step(error_step: object) -> str:
    """The status a localized row's ``error_step`` implies, for tables written before ``status`` existed.

    Such tables never told "unfinished" from "unknown"; a null step reads as unknown.
    """
    if error_step is None or (isinstance(error_step, float) and math.isnan(error_step)):  # NaN: pandas' null
        return "unknown"
    return "no_error" if int(error_step) == -1 else "error"  # type: ignore[call-overload]


def schema_for(kind: str) -> pa.Schema:
    """Return the schema of table ``kind``, or raise naming the kinds that exist."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {sorted(SCHEMAS)}") from None
