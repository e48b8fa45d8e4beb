"""How each family of process reward model reads a solution: token ids, and where each step is scored.

A PRM is asked once per solution: the question and the steps are written the way
the model was trained to read them, and each step is scored at one token position.
Three families (``prm_family``):

- ``separator`` (Qwen2.5-Math-PRM): a chat (system, user = question, assistant =
  the steps, each followed by the separator token, ``<extra_0>`` in Qwen's
  tokenizer) rendered with the tokenizer's chat template; a two-class head is read
  at every separator, class 1 meaning the step is good.
- ``step_tag`` (Math-Shepherd): plain text ``"<question> Step 1: ... ки\\nStep 2: ... ки"``
  for a causal LM; the next-token logits at each step tag, restricted to the
  "good" and "bad" tokens, give P(good) by a softmax over the two.
- ``token_classify`` (a token-classification model trained by TRL's PRMTrainer):
  TRL's layout exactly: BOS (when the tokenizer has one), the question's tokens,
  then each step's tokens followed by the tokens of the step separator (default
  ``"\\n"``); label 1 (good) is read at the last token of each step's separator.
  (The installed TRL 1.16 no longer ships PRMTrainer; this is the layout of
  ``PRMTrainer.tokenize_row`` in TRL's ``trl/experimental/prm/prm_trainer.py``.)

Model text is untrusted: a step that contains the separator or the step tag
would add a scoring position and shift every score after it, so the marker is
removed from the text before it is rendered, and the positions found are
counted; a mismatch is that solution's error, never a misaligned score. The TRL
layout is built from token ids directly, so its positions are known by
construction. Every family's readout is two logits per step (see
:attr:`PRMFormat.good_column`); the engines return them raw and the localizer takes
the softmax, so both engines are read the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from stepdata.steps import step_body

FAMILIES = ("separator", "step_tag", "token_classify")
QWEN_SEPARATOR = "<extra_0>"
# The system message of Qwen2.5-Math-PRM's model card (the chat the model was trained on starts with it).
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
TRL_SEPARATOR = "\n"  # PRMConfig.step_separator's default


@dataclass(frozen=True)
class Encoded:
    """One solution as the PRM reads it: its token ids and, per step, the position that scores it."""

    ids: list[int]
    positions: list[int]


class PRMInputError(ValueError):
    """A solution the PRM cannot be asked about as given (a per-row outcome, not a batch failure)."""


def vocabulary_id(tokenizer: Any, text: str, option: str) -> int:
    """The id of ``text`` as one token: a vocabulary entry (added tokens included), or a text that encodes to one."""
    vocabulary = tokenizer.get_vocab()
    if text in vocabulary:
        return int(vocabulary[text])
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{option} {text!r} is not one token of this tokenizer (it encodes to {len(ids)} tokens: "
                         f"{tokenizer.convert_ids_to_tokens(ids)})")
    return int(ids[0])


def id_after_space(tokenizer: Any, text: str, option: str) -> int:
    """The id ``text`` has when written after a space, as a step tag or a label token is in Math-Shepherd's text.

    A sentencepiece vocabulary spells "+" after a space as "▁+" and a byte-level one as "Ġ+":
    the token a model reads (or predicts) there is that one, not the bare character.
    """
    ids = tokenizer.encode(f"x {text}", add_special_tokens=False)
    last = int(ids[-1]) if ids else -1
    if not ids or tokenizer.decode([last]).strip() != text.strip():
        raise ValueError(f"{option} {text!r} is not one token of this tokenizer after a space (it is read as "
                         f"{tokenizer.convert_ids_to_tokens(ids[1:])})")
    return last


def _positions(ids: Sequence[int], marker: int, steps: int, what: str) -> list[int]:
    found = [i for i, token in enumerate(ids) if token == marker]
    if len(found) != steps:
        raise PRMInputError(f"found {len(found)} {what} tokens for {steps} steps (the chat template or the text "
                            "adds or merges them)")
    return found


class PRMFormat:
    """What a family writes for a solution (:meth:`encode`) and which of the two logits means "good"."""

    family: ClassVar[str]
    good_column: ClassVar[int]

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The markers and token ids used (for the engine and for error messages)."""
        return {}


class SeparatorFormat(PRMFormat):
    """Qwen2.5-Math-PRM: the chat template over system, question and the separated steps."""

    family, good_column = "separator", 1

    def __init__(self, tokenizer: Any, separator: str | None = None, system: str | None = QWEN_PRM_SYSTEM) -> None:
        self.tokenizer, self.separator = tokenizer, separator or QWEN_SEPARATOR
        if self.separator not in tokenizer.get_vocab() and separator is None:
            raise ValueError(f"the PRM's tokenizer has no {QWEN_SEPARATOR} token: name its step separator with "
                             "prm_separator (--prm-separator)")
        self.separator_id = vocabulary_id(tokenizer, self.separator, "prm_separator")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the separator family renders a chat and the PRM's tokenizer has no chat template")
        self.system = system

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        clean = [step.replace(self.separator, "").strip() for step in steps]
        messages = [{"role": "user", "content": question.replace(self.separator, "")},
                    {"role": "assistant", "content": "".join(step + self.separator for step in clean)}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as exc:  # noqa: BLE001 - a template that refuses a row is that row's outcome
            raise PRMInputError(f"chat template: {type(exc).__name__}: {exc}") from None
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))  # the template writes any BOS itself
        return Encoded(ids, _positions(ids, self.separator_id, len(steps), f"separator {self.separator!r}"))

    def describe(self) -> dict[str, Any]:
        return {"separator": self.separator, "separator_id": self.separator_id}


class StepTagFormat(PRMFormat):
    """Math-Shepherd: "<question> Step k: <step> <tag>" lines; the good and bad tokens' logits at each tag."""

    family, good_column = "step_tag", 0

    def __init__(self, tokenizer: Any, step_tag: str = "ки", good_token: str = "+", bad_token: str = "-") -> None:
        self.tokenizer, self.step_tag = tokenizer, step_tag
        self.tag_id = id_after_space(tokenizer, step_tag, "prm_step_tag")
        self.good_id = id_after_space(tokenizer, good_token, "prm_good_token")
        self.bad_id = id_after_space(tokenizer, bad_token, "prm_bad_token")
        if self.good_id == self.bad_id:
            raise ValueError(f"prm_good_token {good_token!r} and prm_bad_token {bad_token!r} are the same token")

    @property
    def label_tokens(self) -> list[str]:
        """The good and bad tokens as vocabulary entries, in the order the readout uses."""
        return list(self.tokenizer.convert_ids_to_tokens([self.good_id, self.bad_id]))

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        tag = self.step_tag
        lines = [f"Step {i + 1}: {step_body(step).replace(tag, '').strip()} {tag}" for i, step in enumerate(steps)]
        text = f"{question.replace(tag, '').strip()} " + "\n".join(lines)
        ids = list(self.tokenizer.encode(text))  # with the tokenizer's BOS, as the model card encodes
        return Encoded(ids, _positions(ids, self.tag_id, len(steps), f"step tag {tag!r}"))

    def describe(self) -> dict[str, Any]:
        return {"step_tag": self.step_tag, "step_tag_id": self.tag_id, "good_id": self.good_id, "bad_id": self.bad_id}


class TokenClassifyFormat(PRMFormat):
    """TRL PRMTrainer's layout: [BOS] question, then each step followed by the separator's tokens."""

    family, good_column = "token_classify", 1

    def __init__(self, tokenizer: Any, separator: str | None = None) -> None:
        self.tokenizer, self.separator = tokenizer, TRL_SEPARATOR if separator is None else separator
        self.separator_ids = list(tokenizer.encode(self.separator, add_special_tokens=False))
        if not self.separator_ids:
            raise ValueError(f"prm_separator {self.separator!r} encodes to no tokens")

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        tokenizer = self.tokenizer
        ids = list(tokenizer.encode(question, add_special_tokens=False))
        if tokenizer.bos_token_id is not None:
            ids.insert(0, tokenizer.bos_token_id)
        positions = []
        for step in steps:
            ids += list(tokenizer.encode(step.strip(), add_special_tokens=False)) + self.separator_ids
            positions.append(len(ids) - 1)  # TRL puts the step's label on its last token
        return Encoded(ids, positions)

    def describe(self) -> dict[str, Any]:
        return {"separator": self.separator, "separator_ids": self.separator_ids}


def make_format(family: str, tokenizer: Any, *, separator: str | None = None, step_tag: str = "ки",
                good_token: str = "+", bad_token: str = "-", system: str | None = QWEN_PRM_SYSTEM) -> PRMFormat:
    """The input format of ``family`` over ``tokenizer``; a marker that is not one token is a clear error here."""
    if family == "separator":
        return SeparatorFormat(tokenizer, separator, system)
    if family == "step_tag":
        return StepTagFormat(tokenizer, step_tag, good_token, bad_token)
    if family == "token_classify":
        return TokenClassifyFormat(tokenizer, separator)
    raise ValueError(f"unknown prm_family {family!r}; expected one of {list(FAMILIES)}")
