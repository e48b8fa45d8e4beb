"""Filters that clean a pairs table before training, without dropping anything silently.

Every filter returns ``(kept, dropped)``. ``kept`` holds the surviving rows
unchanged (same columns, original index, so a row can still be traced to its
place in the input file); ``dropped`` holds the removed rows plus
:data:`DROP_COLUMNS`:

- ``drop_filter``: which filter removed the row (``unverified``, ``empty``,
  ``identical``, ``length``, ``exact-dup``, ``near-dup``);
- ``drop_reason``: a short, stable phrase that can be counted ("chosen over 4000
  chars"), so statistics group rows by cause;
- ``drop_detail``: what was seen in this row ("chosen has 5123 chars");
- ``duplicate_of``: for the two dedup filters, the ``pair_id`` of the row kept in
  its place (null otherwise);
- ``input_row``: the row's index in the table the filters were given.

Why each filter exists:

- *unverified*: a chosen step that failed its check (``chosen_verified`` False:
  "3 / 2 = 15" reaching a lucky right answer) teaches the model a wrong step as
  the right one. Left out by default; ``keep_unverified`` keeps them. Unchecked
  pairs (null) stay.
- *empty*: a whitespace-only side carries no preference and, for step-level pairs,
  usually means a sampler stopped at a step marker.
- *identical*: when chosen and rejected differ only in whitespace, the DPO loss
  pushes the two log-probabilities apart on what is in effect the same text.
- *length*: one runaway sample (a repetition loop) can dominate a batch's memory
  and the loss; limits are in characters and/or tokens of chosen and rejected.
- *exact-dup*: the same (problem, prompt, prefix, chosen, rejected) twice is the
  same gradient twice; sampling at a fixed seed from several localizers makes this
  common. The prompt chat (``prompt_messages``) is part of the key: the same steps
  after a different template are a different training example. ``kind`` is not.
- *near-dup*: rectification often resamples the same step with a changed comma or
  capital letter. Within one problem, prompt and prefix, a pair is a near
  duplicate of an earlier one when chosen and rejected are equal after
  :func:`normalize_text`, or (when a threshold is given) when both sides' character
  n-gram Jaccard similarity reaches it. The first pair is kept.

Near-duplicate detection never merges pairs whose numbers differ: normalisation
keeps every digit and the punctuation between digits ("1.5" stays apart from
"15"), keeps math operators, and the Jaccard test applies only to pairs whose
sides state exactly the same numbers. A step that differs from another only in a
number is exactly what a step-level pair teaches, so it must never be deduplicated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

DROP_COLUMNS: tuple[str, ...] = ("drop_filter", "drop_reason", "drop_detail", "duplicate_of", "input_row")

FILTER_ORDER: tuple[str, ...] = ("unverified", "empty", "identical", "length", "exact-dup", "near-dup")

Filtered = tuple[pd.DataFrame, pd.DataFrame]

# Sentence punctuation, except where it sits between two digits ("1.5", "1,000", "3:4").
_LOOSE_PUNCT = re.compile(r"(?<!\d)[.,;:!?\"'`]|[.,;:!?\"'`](?!\d)")
_WS_RUN = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def empty_dropped(df: pd.DataFrame) -> pd.DataFrame:
    """A dropped frame with no rows: the columns of ``df`` plus :data:`DROP_COLUMNS`."""
    return pd.DataFrame(columns=[*df.columns, *DROP_COLUMNS])


def _partition(
    df: pd.DataFrame,
    reasons: dict[Any, tuple[str, str]],
    filter_name: str,
    duplicate_of: dict[Any, str] | None = None,
) -> Filtered:
    """Split ``df`` into kept rows and the rows named in ``reasons`` (index -> (reason, detail))."""
    if not reasons:
        return df, empty_dropped(df)
    drop_mask = df.index.isin(list(reasons))
    kept = df[~drop_mask]
    dropped = df[drop_mask].copy()
    dropped["drop_filter"] = filter_name
    dropped["drop_reason"] = [reasons[i][0] for i in dropped.index]
    dropped["drop_detail"] = [reasons[i][1] for i in dropped.index]
    dropped["duplicate_of"] = [(duplicate_of or {}).get(i) for i in dropped.index]
    dropped["input_row"] = list(dropped.index)
    return kept, dropped


def _text(value: Any) -> str:
    """A side's text, with null (only possible in foreign files) read as empty."""
    return value if isinstance(value, str) else ""


def chosen_failed_check(value: Any) -> bool:
    """True when a pair's ``chosen_verified`` says the chosen side failed its check (null: not checked)."""
    return value is not None and not pd.isna(value) and not bool(value)


def drop_unverified(df: pd.DataFrame) -> Filtered:
    """Drop pairs whose chosen side failed its check (``chosen_verified`` is False)."""
    if "chosen_verified" not in df.columns:
        return df, empty_dropped(df)
    reasons = {index: ("chosen failed its check", f"chosen_verified is False ({kind} pair, error step {step})")
               for index, value, kind, step in zip(df.index, df["chosen_verified"], df["kind"], df["error_step"])
               if chosen_failed_check(value)}
    return _partition(df, reasons, "unverified")


def drop_empty(df: pd.DataFrame) -> Filtered:
    """Drop pairs whose chosen or rejected text is empty or whitespace only."""
    reasons: dict[Any, tuple[str, str]] = {}
    for index, chosen, rejected in zip(df.index, df["chosen"], df["rejected"]):
        sides = [name for name, text in (("chosen", chosen), ("rejected", rejected)) if not _text(text).strip()]
        if sides:
            reason = " and ".join(sides) + (" are" if len(sides) == 2 else " is") + " empty"
            reasons[index] = (reason, f"{reason} (whitespace only): chosen {len(_text(chosen))} chars, "
                                      f"rejected {len(_text(rejected))} chars")
    return _partition(df, reasons, "empty")


def _collapse_ws(text: str) -> str:
    return _WS_RUN.sub(" ", text).strip()


def drop_identical(df: pd.DataFrame) -> Filtered:
    """Drop pairs whose chosen and rejected are equal once runs of whitespace are collapsed."""
    reasons: dict[Any, tuple[str, str]] = {}
    for index, chosen, rejected in zip(df.index, df["chosen"], df["rejected"]):
        if _collapse_ws(_text(chosen)) == _collapse_ws(_text(rejected)):
            same = "exactly" if _text(chosen) == _text(rejected) else "after whitespace normalisation"
            reasons[index] = ("chosen equals rejected", f"chosen equals rejected {same}")
    return _partition(df, reasons, "identical")


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts`` as the model sees them inside a sequence (no special tokens added)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def drop_too_long(
    df: pd.DataFrame,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: Any = None,
) -> Filtered:
    """Drop pairs whose chosen or rejected exceeds ``max_chars`` characters or ``max_tokens`` tokens.

    Token limits need ``tokenizer`` (the model's: token counts differ by model).
    """
    if max_tokens is not None and tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer (the model's) to count tokens")
    for name, limit in (("max_chars", max_chars), ("max_tokens", max_tokens)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be at least 1, got {limit}")
    if max_chars is None and max_tokens is None:
        return df, empty_dropped(df)
    sides = {side: [_text(t) for t in df[side]] for side in ("chosen", "rejected")}
    measures: list[tuple[str, int, dict[str, list[int]]]] = []
    if max_chars is not None:
        measures.append(("chars", max_chars, {s: [len(t) for t in texts] for s, texts in sides.items()}))
    if max_tokens is not None:
        measures.append(("tokens", max_tokens, {s: count_tokens(tokenizer, texts) for s, texts in sides.items()}))
    reasons: dict[Any, tuple[str, str]] = {}
    for row, index in enumerate(df.index):
        over = [(side, unit, limit, counts[side][row]) for unit, limit, counts in measures
                for side in ("chosen", "rejected") if counts[side][row] > limit]
        if over:
            reason = "; ".join(f"{side} over {limit} {unit}" for side, unit, limit, _ in over)
            detail = "; ".join(f"{side} has {n} {unit} (max {limit})" for side, unit, limit, n in over)
            reasons[index] = (reason, detail)
    return _partition(df, reasons, "length")


def _context_key(row: Any) -> str:
    """What the model sees before chosen/rejected, as one hashable key."""
    return json.dumps([row.problem_id, row.prompt_messages, list(row.prefix_steps or [])], ensure_ascii=False)


def drop_exact_duplicates(df: pd.DataFrame) -> Filtered:
    """Drop pairs equal to an earlier one in problem, prompt chat, prefix, chosen and rejected (keeps the first)."""
    first: dict[tuple[str, str, str], Any] = {}
    reasons: dict[Any, tuple[str, str]] = {}
    duplicate_of: dict[Any, str] = {}
    for row in df.itertuples():
        key = (_context_key(row), _text(row.chosen), _text(row.rejected))
        if key in first:
            kept_index, kept_id = first[key]
            reasons[row.Index] = ("exact duplicate", f"same problem, prompt, prefix, chosen and rejected as pair "
                                                     f"{kept_id} (input row {kept_index})")
            duplicate_of[row.Index] = kept_id
        else:
            first[key] = (row.Index, row.pair_id)
    return _partition(df, reasons, "exact-dup", duplicate_of)


def normalize_text(text: str) -> str:
    """Text reduced for near-duplicate comparison, never merging different numbers.

    Case-folded; sentence punctuation (``. , ; : ! ? " ' ```) removed unless it sits
    between two digits (so "1.5", "1,000" and "3:4" survive); whitespace removed,
    except that a run of it between two letters or digits becomes one space ("1 2"
    stays apart from "12"). Math operators, brackets and every digit are kept.
    """
    text = _LOOSE_PUNCT.sub(" ", text.casefold())  # a space keeps word boundaries: "a,b" -> "a b"

    def space(match: re.Match[str]) -> str:
        before, after = match.start() - 1, match.end()
        joins_words = before >= 0 and after < len(text) and text[before].isalnum() and text[after].isalnum()
        return " " if joins_words else ""

    return _WS_RUN.sub(space, text)


def numbers_in(text: str) -> list[str]:
    """The numbers ``text`` states, in order (digits with inner separators)."""
    return _NUMBER.findall(text)


def char_ngrams(text: str, n: int) -> frozenset[str]:
    """Character n-grams of ``text`` (the whole text when shorter than n)."""
    if len(text) <= n:
        return frozenset([text])
    return frozenset(text[i : i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


@dataclass
class _Seen:
    index: Any
    pair_id: str
    norm: tuple[str, str]
    numbers: tuple[tuple[str, ...], tuple[str, ...]]
    grams: tuple[frozenset[str], frozenset[str]] | None


def drop_near_duplicates(df: pd.DataFrame, threshold: float | None = None, ngram: int = 3) -> Filtered:
    """Drop pairs that nearly repeat an earlier pair of the same problem, prompt and prefix (keeps the first).

    Always: chosen and rejected both equal after :func:`normalize_text`. With
    ``threshold`` (0 < t <= 1): both sides' character ``ngram`` Jaccard similarity
    (on normalised text) is at least ``threshold`` and both sides state the same
    numbers in the same order.
    """
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
    groups: dict[str, list[_Seen]] = {}
    reasons: dict[Any, tuple[str, str]] = {}
    duplicate_of: dict[Any, str] = {}
    for row in df.itertuples():
        chosen, rejected = _text(row.chosen), _text(row.rejected)
        norm = (normalize_text(chosen), normalize_text(rejected))
        seen = _Seen(row.Index, row.pair_id, norm, (tuple(numbers_in(chosen)), tuple(numbers_in(rejected))),
                     (char_ngrams(norm[0], ngram), char_ngrams(norm[1], ngram)) if threshold is not None else None)
        earlier = groups.setdefault(_context_key(row), [])
        match: tuple[_Seen, str, str] | None = None
        for other in earlier:
            if other.norm == norm:
                match = (other, "normalised text equal",
                         "chosen and rejected equal after normalising case, whitespace and punctuation")
                break
            if threshold is not None and other.numbers == seen.numbers:
                sims = (jaccard(other.grams[0], seen.grams[0]), jaccard(other.grams[1], seen.grams[1]))
                if min(sims) >= threshold:
                    match = (other, f"{ngram}-gram jaccard >= {threshold}",
                             f"{ngram}-gram Jaccard chosen {sims[0]:.3f}, rejected {sims[1]:.3f} "
                             f"(>= {threshold}), same numbers")
                    break
        if match is None:
            earlier.append(seen)
            continue
        other, reason, detail = match
        reasons[row.Index] = (f"near duplicate: {reason}",
                              f"{detail}; near duplicate of pair {other.pair_id} (input row {other.index})")
        duplicate_of[row.Index] = other.pair_id
    return _partition(df, reasons, "near-dup", duplicate_of)


@dataclass(frozen=True)
class FilterConfig:
    """Which filters :func:`apply_filters` runs. Empty and identical sides are always dropped."""

    max_chars: int | None = None
    max_tokens: int | None = None
    dedup: bool = True  # exact and normalised-text near duplicates
    near_dup_threshold: float | None = None  # also n-gram Jaccard near duplicates (needs dedup)
    ngram: int = 3
    keep_unverified: bool = False  # keep pairs whose chosen side failed its check (chosen_verified False)


def apply_filters(df: pd.DataFrame, config: FilterConfig | None = None, tokenizer: Any = None) -> Filtered:
    """Run the filters in :data:`FILTER_ORDER`; return the kept rows and every dropped row with its reason.

    Cheap, unambiguous filters run first so a row is charged to the most basic
    thing wrong with it (an empty pair is "empty", not also a duplicate).
    """
    config = config or FilterConfig()
    steps: list[Callable[[pd.DataFrame], Filtered]] = [] if config.keep_unverified else [drop_unverified]
    steps += [
        drop_empty,
        drop_identical,
        lambda d: drop_too_long(d, config.max_chars, config.max_tokens, tokenizer),
    ]
    if config.dedup:
        steps.append(drop_exact_duplicates)
        steps.append(lambda d: drop_near_duplicates(d, config.near_dup_threshold, config.ngram))
    elif config.near_dup_threshold is not None:
        raise ValueError("a near-duplicate threshold needs dedup on")
    kept = df
    dropped_parts = []
    for step in steps:
        kept, dropped = step(kept)
        if len(dropped):
            dropped_parts.append(dropped)
    dropped = pd.concat(dropped_parts) if dropped_parts else empty_dropped(df)
    return kept, dropped
