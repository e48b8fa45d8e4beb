"""The data step of the trainers, asserted token by token on real tokenizers.

What must hold: the loss covers exactly the step tokens (the collator's
completion mask decodes to the chosen/rejected text), EOS follows a side only
when it ends its solution, the prompt tokens are the prompt tokenized alone, and
a token split at the prompt/step boundary is repaired or reported, never trained
on silently.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import requires_torch, requires_train

from stepdata.pairs import make_pair, pair_prompt_text, prompt_messages_of
from stepdata.prompts import load_prompt

pytestmark = requires_torch

QUESTION = "Ada has 3 bags with 4 marbles in each. She buys 5 more marbles. How many marbles does Ada have?"


def _messages() -> str:
    return prompt_messages_of(load_prompt("step_by_step").render(question=QUESTION))


def step_pair(**overrides):
    values = dict(
        problem_id="p1", question=QUESTION, answer="17", prompt_messages=_messages(),
        prefix_steps=[" Ada starts with 3 * 4 = 12 marbles.\n"],
        chosen="Step 2: After buying 5 more, Ada has 12 + 5 = 17 marbles.\n",
        rejected="Step 2: After buying 5 more, Ada has 12 + 5 = 18 marbles.\n",
        chosen_rest="The answer is 17.", rejected_rest="The answer is 18.", kind="step-dpo", error_step=1,
    )
    values.update(overrides)
    return make_pair(**values)


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def tokenizer(request, tiny_model_dir):
    from transformers import AutoTokenizer

    path = tiny_model_dir if request.param == "tiny" else request.getfixturevalue("smollm2_dir")
    return AutoTokenizer.from_pretrained(path)


def _collate(examples):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=0)(examples)


def _completion_text(tokenizer, batch, row):
    ids = batch["input_ids"][row][batch["completion_mask"][row].bool()].tolist()
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@requires_train
def test_loss_mask_covers_exactly_the_step_and_no_eos_after_a_middle_step(tokenizer):
    from trainers.data import tokenize_pair

    pair = step_pair()
    example, counts = tokenize_pair(tokenizer, pair)
    assert counts == {"exact": 2}
    batch = _collate([example])
    assert _completion_text(tokenizer, batch, 0) == pair["chosen"]  # chosen half of the batch
    assert _completion_text(tokenizer, batch, 1) == pair["rejected"]  # rejected half
    assert tokenizer.eos_token_id not in example["chosen_ids"] + example["rejected_ids"]
    prompt = pair_prompt_text(tokenizer, pair["prompt_messages"], pair["prefix_steps"])
    assert example["prompt_ids"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert prompt.endswith("Let's think step by step.\nStep 1: Ada starts with 3 * 4 = 12 marbles.\n")


@requires_train
def test_eos_only_on_the_side_that_ends_its_solution(tokenizer):
    from trainers.data import tokenize_pair

    eos = tokenizer.eos_token_id
    last_step = step_pair(chosen="Step 2: Ada has 12 + 5 = 17 marbles.\nThe answer is 17.", chosen_rest="")
    example, counts = tokenize_pair(tokenizer, last_step)
    assert example["chosen_ids"][-1] == eos and example["chosen_ids"].count(eos) == 1
    assert eos not in example["rejected_ids"] and counts["eos"] == 1
    whole = step_pair(kind="scdpo", chosen_rest="", rejected_rest="")
    example, _ = tokenize_pair(tokenizer, whole)
    assert example["chosen_ids"][-1] == eos and example["rejected_ids"][-1] == eos
    # "always" is plain TRL's behaviour, kept as an option for comparisons
    example, _ = tokenize_pair(tokenizer, step_pair(), eos_policy="always")
    assert example["chosen_ids"][-1] == eos and example["rejected_ids"][-1] == eos


@requires_train
def test_a_token_split_at_the_boundary_is_repaired_and_verified(tokenizer):
    from trainers.data import tokenize_pair, tokenize_pairs

    # The prefix ends in a space, so " marbles" is one token when prompt and step are tokenized together:
    # the prompt's own tokens are not a prefix of the joint tokens.
    pair = step_pair(prefix_steps=[" Ada starts with 3 * 4 = 12 marbles.\nStep 2: Ada has 12 + 5 = 17 "],
                     chosen="marbles.\n", rejected="stickers.\n")
    prompt = pair_prompt_text(tokenizer, pair["prompt_messages"], pair["prefix_steps"])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt + pair["chosen"], add_special_tokens=False)["input_ids"]
    # the case under test must really arise with this tokenizer (if a tokenizer change removed it, fail loudly)
    assert joint[: len(prompt_ids)] != prompt_ids, "prompt tokens are a prefix: no boundary split to repair"
    example, counts = tokenize_pair(tokenizer, pair)
    assert counts == {"fixed": 2}
    assert example["prompt_ids"] == prompt_ids  # the context the model saw when it wrote the step
    decoded = tokenizer.decode(example["prompt_ids"] + example["chosen_ids"], skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)
    assert decoded == tokenizer.decode(joint, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    batch = _collate([example])
    assert _completion_text(tokenizer, batch, 0) == "marbles.\n"
    # "drop" reports such rows instead of repairing them
    examples, report = tokenize_pairs(tokenizer, pd.DataFrame([pair, step_pair()]), boundary="drop")
    assert len(examples) == 1 and report.dropped_by_reason == {"boundary": 1}


def _metaspace_tokenizer(tmp_path):
    """A SentencePiece-style tokenizer (prefix space on every encode), built offline: the case where a
    step encoded on its own does not decode back to the same text."""
    from tiny_models import CHAT_TEMPLATE
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.normalizer = normalizers.Replace(" ", "\u2581")
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    model.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    texts = [QUESTION, "Step 2: After buying 5 more, Ada has 12 + 5 = 17 marbles.", "Let's think step by step."] * 20
    model.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_start|>",
                                                                                           "<|im_end|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|im_end|>", unk_token="<unk>",
                                  pad_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


@requires_train
def test_an_unrepairable_boundary_is_reported_or_raised(tmp_path):
    from trainers.data import BoundaryError, tokenize_pairs

    tok = _metaspace_tokenizer(tmp_path)
    # "marb" + "les." is one token "▁marbles." when encoded together; "les." alone gets a prefix space.
    bad = step_pair(prefix_steps=[" Ada starts with 3 * 4 = 12 marb"], chosen="les.", rejected="les!")
    prompt = pair_prompt_text(tok, bad["prompt_messages"], bad["prefix_steps"])
    joint = tok(prompt + "les.", add_special_tokens=False)["input_ids"]
    alone = tok("les.", add_special_tokens=False)["input_ids"]
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert joint[: len(prompt_ids)] != prompt_ids, "tokens do not merge across the boundary"
    assert tok.decode(prompt_ids + alone) != tok.decode(joint), "the step encodes on its own: not the unfixable case"
    examples, report = tokenize_pairs(tok, pd.DataFrame([bad]))
    assert examples == [] or len(examples) == 0
    assert report.dropped_by_reason == {"boundary": 1} and bad["pair_id"] in report.dropped[0]["pair_id"]
    with pytest.raises(BoundaryError, match=bad["pair_id"]):
        tokenize_pairs(tok, pd.DataFrame([bad]), boundary="error")


@requires_train
def test_other_kinds_and_bad_rows_are_counted_not_dropped_silently(tiny_model_dir):
    from transformers import AutoTokenizer

    from trainers.data import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [step_pair(), step_pair(kind="scdpo"), step_pair(prompt_messages=None), step_pair(chosen="   ")]
    examples, report = tokenize_pairs(tok, pd.DataFrame(rows), kinds=["step-dpo"])
    assert len(examples) == 1
    assert report.rows_in == 4 and report.rows_out == 1
    assert report.dropped_by_reason == {"kind": 1, "bad_row": 2}
    reasons = " ".join(d["reason"] for d in report.dropped)
    assert "prompt_messages" in reasons and "'chosen' is empty" in reasons
