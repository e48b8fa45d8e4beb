"""The data step: a stepdata pairs table becomes token ids a DPO trainer can use.

Two things plain TRL gets wrong for step-level pairs, fixed here before TRL sees
the data:

1. End of sequence. TRL appends EOS to every non-chat completion. A Step-DPO
   chosen step that is not the last step of its solution must not end in EOS,
   or the model is taught to stop after one step (Step-DPO's own trainer removed
   it). We append EOS exactly where the pairs table says the side ends the
   solution (``chosen_ends_solution`` / ``rejected_ends_solution``): never for a
   middle step, always for an SCDPO continuation or a whole DPO solution.
2. The prompt/step boundary. Tokenizing prompt + step as one string can merge
   the last prompt characters with the first step characters into one token, so
   the prompt's tokens are no longer a prefix and the "step" tokens start inside
   the prompt. We tokenize the prompt alone (as the model saw it when it
   generated the step), check that prompt + step starts with those tokens, and
   when it does not, encode the step on its own and keep it only if the two
   sequences decode to the same text. Rows that cannot be repaired are reported,
   never silently trained on.

The prompt is rendered with :func:`stepdata.pairs.pair_prompt_text`, the same
code the generators use, so training sees the context the policy saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from stepdata.pairs import pair_prompt_text
from stepdata.pairs.filters import chosen_failed_check

EosPolicy = Literal["auto", "never", "always"]
BoundaryPolicy = Literal["fix", "drop", "error"]


class BoundaryError(ValueError):
    """A pair whose prompt/step boundary could not be tokenized cleanly (with ``boundary="error"``)."""


@dataclass
class DataReport:
    """What the data step did with each row: used as is, repaired, or left out (and why)."""

    rows_in: int = 0
    rows_out: int = 0
    boundary_exact: int = 0
    boundary_fixed: int = 0
    eos_added: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"pair_id", "reason"}

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(Counter(d["reason"].split(":")[0] for d in self.dropped))

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "boundary_exact": self.boundary_exact,
            "boundary_fixed": self.boundary_fixed,
            "eos_added": self.eos_added,
            "dropped": len(self.dropped),
            "dropped_by_reason": self.dropped_by_reason,
        }


def _encode(tokenizer: Any, text: str) -> list[int]:
    # Rendered chats already hold their special tokens (BOS included), so none are added here.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def encode_continuation(tokenizer: Any, prompt_text: str, prompt_ids: list[int], text: str) -> tuple[list[int], str]:
    """Token ids of ``text`` as it follows ``prompt_ids``, and how the boundary was found.

    Returns ``(ids, "exact")`` when tokenizing prompt+text starts with the prompt's
    own tokens, ``(ids, "fixed")`` when the joint tokenization merged or split a
    token at the boundary and ``text`` encoded alone decodes back to the same
    string after the prompt. Raises :class:`BoundaryError` otherwise.
    """
    joint = _encode(tokenizer, prompt_text + text)
    n = len(prompt_ids)
    if joint[:n] == prompt_ids:
        return joint[n:], "exact"
    alone = _encode(tokenizer, text)
    if _decode(tokenizer, prompt_ids + alone) == _decode(tokenizer, joint):
        return alone, "fixed"
    raise BoundaryError(
        f"tokens merge across the prompt/step boundary and the step cannot be encoded on its own "
        f"(prompt ends {prompt_text[-20:]!r}, step starts {text[:20]!r})"
    )


def _wants_eos(policy: EosPolicy, ends_solution: Any) -> bool:
    if policy == "always":
        return True
    if policy == "never":
        return False
    return bool(ends_solution) if ends_solution is not None and not pd.isna(ends_solution) else False


def tokenize_pair(
    tokenizer: Any,
    row: Any,
    eos_policy: EosPolicy = "auto",
    boundary: BoundaryPolicy = "fix",
) -> tuple[dict[str, Any], dict[str, int]]:
    """One pairs row (a namedtuple, Series or dict) as ``prompt_ids``/``chosen_ids``/``rejected_ids``.

    The second value counts what happened (``exact``, ``fixed``, ``eos``) for the report.
    """
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
    prompt_text = pair_prompt_text(tokenizer, get("prompt_messages"), list(get("prefix_steps") or []))
    prompt_ids = _encode(tokenizer, prompt_text)
    counts = Counter()
    out: dict[str, Any] = {"pair_id": get("pair_id"), "prompt_ids": prompt_ids}
    for side in ("chosen", "rejected"):
        text = get(side)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"pair {get('pair_id')!r}: field {side!r} is empty")
        ids, how = encode_continuation(tokenizer, prompt_text, prompt_ids, text)
        if how == "fixed" and boundary == "drop":
            raise BoundaryError(f"pair {get('pair_id')!r}: {side} step splits a token at the boundary")
        counts[how] += 1
        if _wants_eos(eos_policy, get(f"{side}_ends_solution")):
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has no eos_token; set one before training")
            if not ids or ids[-1] != tokenizer.eos_token_id:
                ids = ids + [tokenizer.eos_token_id]
                counts["eos"] += 1
        out[f"{side}_ids"] = ids
    return out, dict(counts)


def tokenize_pairs(
    tokenizer: Any,
    pairs: pd.DataFrame,
    kinds: Iterable[str] | None = None,
    eos_policy: EosPolicy = "auto",
    boundary: BoundaryPolicy = "fix",
    max_prompt_length: int | None = None,
    keep_unverified: bool = False,
) -> tuple[list[dict[str, Any]], DataReport]:
    """Tokenize a pairs table; rows of other kinds, bad rows and unfixable boundaries go to the report.

    Pairs whose chosen side failed its check (``chosen_verified`` False) are left out and
    reported unless ``keep_unverified``: they would teach a wrong step as the right one.

    With ``boundary="error"`` the first unfixable row raises, naming it.
    """
    report = DataReport(rows_in=len(pairs))
    wanted = set(kinds) if kinds is not None else None
    examples: list[dict[str, Any]] = []
    for row in pairs.itertuples(index=False):
        if wanted is not None and row.kind not in wanted:
            report.dropped.append({"pair_id": row.pair_id, "reason": f"kind: {row.kind} is not in {sorted(wanted)}"})
            continue
        if not keep_unverified and chosen_failed_check(getattr(row, "chosen_verified", None)):
            report.dropped.append({"pair_id": row.pair_id,
                                   "reason": "unverified: the chosen side failed its check (chosen_verified is False)"})
            continue
        try:
            example, counts = tokenize_pair(tokenizer, row, eos_policy, boundary)
        except BoundaryError as exc:
            if boundary == "error":
                raise BoundaryError(f"pair {row.pair_id!r}: {exc}") from None
            report.dropped.append({"pair_id": row.pair_id, "reason": f"boundary: {exc}"})
            continue
        except (ValueError, KeyError, TypeError) as exc:
            report.dropped.append({"pair_id": row.pair_id, "reason": f"bad_row: {exc}"})
            continue
        if max_prompt_length is not None and len(example["prompt_ids"]) >= max_prompt_length:
            report.dropped.append({"pair_id": row.pair_id,
                                   "reason": f"too_long: prompt has {len(example['prompt_ids'])} tokens"})
            continue
        report.boundary_exact += counts.get("exact", 0)
        report.boundary_fixed += counts.get("fixed", 0)
        report.eos_added += counts.get("eos", 0)
        examples.append(example)
    report.rows_out = len(examples)
    return examples, report
