"""Preference pairs: building rows of the pairs table, and (in submodules) exporting,
filtering and summarizing them."""

from stepdata.pairs.build import (
    make_pair,
    pair_id,
    pair_prompt_text,
    partial_answer,
    prompt_messages_of,
)

__all__ = ["make_pair", "pair_id", "pair_prompt_text", "partial_answer", "prompt_messages_of"]
