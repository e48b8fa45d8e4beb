"""Tiny random models built offline for tests: a real tokenizer and a real architecture, no download.

The tokenizer is a byte-level BPE trained on our own embedded problems, with a
ChatML chat template; the model is a 2-layer Llama with head dimension 64 (vLLM's
CPU attention rejects smaller heads). The process reward models (one per family the
prm localizer reads) share the tokenizer, with their markers added as whole tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_tokenizer(seed: int = 0, *, added: Sequence[str] = (), special: Sequence[str] = ()) -> Any:
    """The byte-level BPE tokenizer (ChatML template) every tiny model uses, plus ``added`` tokens (kept whole
    in any text) and ``special`` ones (a PRM's step separator)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    from stepdata import make_problems

    texts = [t for row in make_problems(200, seed=seed).itertuples() for t in (row.question, row.solution)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<|im_start|>",
                                        eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    if added:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    if special:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in special], special_tokens=True)
    return tokenizer


def _llama_config(tokenizer: Any, max_positions: int = 1024, **more: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, **more,
    )


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(seed)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- process reward models, one per family the prm localizer reads -------------------------------------
# A context of 2048: a ProcessBench sample with this small vocabulary takes up to about 1200 tokens.

PRM_SEPARATOR = "<extra_0>"  # Qwen2.5-Math-PRM's step separator (a special token in its tokenizer)
PRM_STEP_TAG = "ки"  # Math-Shepherd's step tag


def build_tiny_separator_prm(directory: Path, seed: int = 0, max_positions: int = 2048) -> Path:
    """A Qwen2.5-Math-PRM-shaped checkpoint: a Qwen2 backbone under ``model.`` and a two-layer, two-class head
    ``score.0`` / ``score.2``, architecture ``Qwen2ForProcessRewardModel`` (no remote code: the weights are
    written by name, as the real checkpoint names them)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = build_tiny_tokenizer(seed, special=[PRM_SEPARATOR])
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, num_labels=2, architectures=["Qwen2ForProcessRewardModel"],
    )
    torch.manual_seed(seed)
    backbone = Qwen2Model(config)
    head = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))
    for layer in (head[0], head[2]):  # spread the scores: a default init leaves every step near 0.5
        torch.nn.init.normal_(layer.weight, std=0.1)
        torch.nn.init.normal_(layer.bias, std=0.1)
    weights = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    weights |= {f"score.{k}": v for k, v in head.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_step_tag_prm(directory: Path, seed: int = 0, max_positions: int = 2048) -> Path:
    """A Math-Shepherd-shaped causal LM: the step tag is one token, "+" and "-" are tokens of the vocabulary."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(seed, added=[PRM_STEP_TAG])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer, max_positions, initializer_range=0.2))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_token_classify_prm(directory: Path, seed: int = 0, max_positions: int = 2048) -> Path:
    """What TRL's PRMTrainer leaves: a two-label token-classification model (here Qwen2) and its tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    tokenizer = build_tiny_tokenizer(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, num_labels=2, initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = Qwen2ForTokenClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
