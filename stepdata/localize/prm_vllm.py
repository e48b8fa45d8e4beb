"""The vLLM engine of the PRM localizer: a pooling engine that returns every token's two logits.

One engine setting for all three families: ``runner="pooling"`` and
``PoolerConfig(task="token_classify", tok_pooling_type="ALL")``, asked with
``PoolingParams(use_activation=False)``. We send token ids that we built
(:mod:`stepdata.localize.prm_formats`) and pick the scored positions ourselves,
rather than vLLM's ``STEP`` pooling with a ``step_tag_id``: that pooling selects
every occurrence of one token id, which cannot express TRL's layout (the label sits
on the last token of a separator, "\\n", that also occurs inside steps) and would
silently score a tag written inside model text. The logits are raw (no activation),
and the localizer takes the same softmax over both engines' output.

- ``separator``: the checkpoint's architecture ``Qwen2ForProcessRewardModel`` is
  native to vLLM (``qwen2_rm.py``: a Qwen2 backbone and the ``score`` head with two
  labels). vLLM's config hook gives it a default ``step_tag_id`` (Qwen's
  ``<extra_0>``, 151651); with ``ALL`` pooling that setting is not read.
- ``step_tag``: the causal LM is converted (``convert="classify"``) with
  ``hf_overrides={"classifier_from_token": [good, bad], "method":
  "no_post_processing"}``: vLLM's ``load_weights_no_post_processing`` copies those
  two tokens' ``lm_head`` rows into the classifier, so each position yields the two
  label logits, good first (with activation on, vLLM would return their softmax).
  vLLM's documented Math-Shepherd recipe (the embed conversion with
  ``returned_token_ids``) pools hidden-state dimensions, not the tokens' logits, so
  it is not a P(good) and is not used.
- ``token_classify``: a ``*ForTokenClassification`` checkpoint (Qwen2, Llama, ...)
  runs with ``convert="classify"``: vLLM maps the name to the ``*ForCausalLM``
  backbone and adds a ``score`` layer with the checkpoint's ``num_labels`` (the
  checkpoint's ``score.bias`` is loaded too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from stepdata.localize.prm_formats import Encoded

log = logging.getLogger(__name__)


def engine_options(family: str, *, label_tokens: Sequence[str] = (), max_length: int | None = None) -> dict[str, Any]:
    """The vLLM options that make ``family``'s checkpoint a two-logits-per-token pooling engine."""
    from vllm.config import PoolerConfig

    options: dict[str, Any] = {
        "runner": "pooling",
        "pooler_config": PoolerConfig(task="token_classify", tok_pooling_type="ALL"),
        "enable_prefix_caching": False,  # every token's output is wanted: a cached prefix would have none
        "max_model_len": max_length,
    }
    if family == "step_tag":
        options |= {"convert": "classify",
                    "hf_overrides": {"classifier_from_token": list(label_tokens), "method": "no_post_processing"}}
    elif family == "token_classify":
        options["convert"] = "classify"
    elif family != "separator":
        raise ValueError(f"unknown prm_family {family!r}")
    return options


class VLLMScorer:
    """Loads ``model`` as a PRM of ``family`` in a vLLM pooling engine; :meth:`logits` as :class:`HFScorer`'s."""

    engine = "vllm"

    def __init__(self, model: str, family: str, *, label_tokens: Sequence[str] = (), max_length: int | None = None,
                 **more: Any) -> None:
        from stepdata.generation.vllm_backend import start_llm

        self.model, self.family = str(model), family
        options = engine_options(family, label_tokens=label_tokens, max_length=max_length) | more
        self.llm, self.settings, self.dtype = start_llm(self.model, **options)
        self.max_length = int(self.llm.llm_engine.model_config.max_model_len)
        log.info("prm (vllm): %s as %s in %s", model, family, self.dtype)

    def logits(self, encoded: Sequence[Encoded], batch_size: int = 8) -> list[Any]:
        """Two logits per step of every solution (numpy float32 arrays [steps, 2]), in order; vLLM batches itself."""
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        if not encoded:
            return []
        prompts = [TokensPrompt(prompt_token_ids=list(e.ids)) for e in encoded]
        outputs = self.llm.encode(prompts, PoolingParams(use_activation=False), pooling_task="token_classify",
                                  use_tqdm=False)
        scored: list[Any] = []
        for e, output in zip(encoded, outputs):
            error = getattr(output, "error", None)
            if error is not None:
                scored.append(f"vllm: {error}")
                continue
            data = output.outputs.data
            if data.shape[0] != len(e.ids) or data.shape[-1] != 2:
                scored.append(f"vllm returned logits of shape {tuple(data.shape)} for {len(e.ids)} tokens "
                              "(expected one pair per token)")
                continue
            scored.append(data[list(e.positions)].float().cpu().numpy())
        return scored

    def close(self) -> None:
        from stepdata.generation.vllm_backend import shutdown_llm

        llm, self.llm = self.llm, None
        shutdown_llm(llm)
