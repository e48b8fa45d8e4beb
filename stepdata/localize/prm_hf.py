"""The transformers engine of the PRM localizer: two logits per step, batched with right padding.

Each family is loaded with stock transformers classes, never a checkpoint's remote
code (a PRM folder is data; running code shipped in it is not our call):

- ``separator``: transformers' ``Qwen2Model`` as the backbone (the checkpoint's
  ``model.*`` weights) and the head built here, ``score = Linear(h, h), ReLU,
  Linear(h, 2)``, its weights read by name (``score.0.*``, ``score.2.*``) from the
  checkpoint's safetensors files, as Qwen2.5-Math-PRM ships them;
- ``step_tag``: ``AutoModelForCausalLM``; the two label tokens' rows of the output
  embedding are applied to the final hidden state at each tag (what vLLM's
  ``classifier_from_token`` conversion computes; no full-vocabulary logits);
- ``token_classify``: ``AutoModelForTokenClassification`` with two labels.

The head is computed in float32 whatever the model's dtype (vLLM's pooling heads are
float32 by default too). Padding is on the right, so every real token keeps its
position and, with a causal model, never sees a pad: a solution's scores do not
depend on what else is in its batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepdata.generation.dtypes import choose_hf_dtype
from stepdata.generation.hf_backend import context_length, pick_device
from stepdata.localize.prm_formats import Encoded

log = logging.getLogger(__name__)


def read_named_weights(model: str | Path, prefix: str) -> dict[str, Any]:
    """The tensors named ``prefix*`` in a model folder's safetensors files (sharded or not), prefix removed."""
    from safetensors import safe_open

    folder = Path(model)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({file for name, file in weight_map.items() if name.startswith(prefix)})
    else:
        files = ["model.safetensors"] if (folder / "model.safetensors").is_file() else []
    tensors: dict[str, Any] = {}
    for file in files:
        with safe_open(str(folder / file), framework="pt") as handle:
            for name in handle.keys():
                if name.startswith(prefix):
                    tensors[name[len(prefix):]] = handle.get_tensor(name)
    return tensors


def _qwen2_backbone(model: str, dtype: Any) -> Any:
    """The checkpoint's ``model.*`` weights in transformers' ``Qwen2Model``; every backbone weight must be there.

    The head's weights are left for :func:`_separator_head`; transformers' load report, which
    would list them as unexpected, is kept quiet, and what matters in it is checked here.
    """
    from transformers import Qwen2Model

    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        backbone, info = Qwen2Model.from_pretrained(model, dtype=dtype, output_loading_info=True)
    finally:
        report.setLevel(level)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{model} lacks backbone weights {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                         "not a Qwen2.5-Math-PRM-style checkpoint (a Qwen2 model under model.*)")
    return backbone


def _separator_head(model: str, hidden: int) -> Any:
    import torch

    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    weights = read_named_weights(model, "score.")
    expected = set(head.state_dict())
    if set(weights) != expected:
        raise ValueError(f"{model} is not a Qwen2.5-Math-PRM-style checkpoint: its score.* weights are "
                         f"{sorted(weights) or 'missing'}, expected {sorted(expected)} (a two-layer, two-class head)")
    head.load_state_dict({k: v.float() for k, v in weights.items()})
    return head.float()


class HFScorer:
    """Loads ``model`` as a PRM of ``family`` with transformers; :meth:`logits` gives two logits per step.

    ``label_ids`` (step_tag family) are the good and bad tokens' ids; ``max_length`` the
    longest input accepted (default: the config's context length).
    """

    engine = "hf"

    def __init__(self, model: str, family: str, *, label_ids: Sequence[int] = (), max_length: int | None = None,
                 device: str = "auto", dtype: str | None = None) -> None:
        import torch
        from transformers import AutoConfig

        self.model, self.family = str(model), family
        self.device = pick_device(device)
        self.dtype = choose_hf_dtype(self.device, dtype)
        torch_dtype = getattr(torch, self.dtype)
        config = AutoConfig.from_pretrained(model)  # a local class (qwen2, llama, ...): no remote code runs
        self.max_length = max_length or context_length(config) or 1 << 30
        self._rows = None
        if family == "separator":

            self.net = _qwen2_backbone(model, torch_dtype)
            self.head = _separator_head(model, self.net.config.hidden_size)
        elif family == "step_tag":
            from transformers import AutoModelForCausalLM

            lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
            output = lm.get_output_embeddings()
            rows = output.weight.detach()[list(label_ids)].float()
            bias = output.bias.detach()[list(label_ids)].float() if getattr(output, "bias", None) is not None else None
            self.net = lm.get_decoder()
            self._rows = (rows.to(self.device), None if bias is None else bias.to(self.device))
            self.head = None
        elif family == "token_classify":
            from transformers import AutoModelForTokenClassification

            self.net = AutoModelForTokenClassification.from_pretrained(model, dtype=torch_dtype)
            if self.net.config.num_labels != 2:
                raise ValueError(f"{model} classifies tokens into {self.net.config.num_labels} labels; a PRM "
                                 "trained by TRL's PRMTrainer has 2 (label 1: the step is good)")
            self.head = None
        else:
            raise ValueError(f"unknown prm_family {family!r}")
        self.net.to(self.device).eval()
        if self.head is not None:
            self.head.to(self.device).eval()
        log.info("prm (hf): %s as %s in %s on %s", model, family, self.dtype, self.device)

    def _readout(self, ids: Any, attention: Any, positions: Sequence[Sequence[int]]) -> list[Any]:
        """Per row, the float32 logits [steps, 2] at its positions."""
        if self.family == "token_classify":
            logits = self.net(input_ids=ids, attention_mask=attention).logits
            return [logits[i, list(p)].float() for i, p in enumerate(positions)]
        hidden = self.net(input_ids=ids, attention_mask=attention).last_hidden_state
        rows = [hidden[i, list(p)].float() for i, p in enumerate(positions)]
        if self.family == "separator":
            return [self.head(h) for h in rows]
        weight, bias = self._rows
        return [h @ weight.T + (0 if bias is None else bias) for h in rows]

    def logits(self, encoded: Sequence[Encoded], batch_size: int = 8) -> list[Any]:
        """Two logits per step of every solution (numpy float32 arrays [steps, 2]), in order."""
        import torch

        out: list[Any] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))  # similar lengths share a batch
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                width = max(len(encoded[i].ids) for i in chunk)
                ids = torch.zeros((len(chunk), width), dtype=torch.long)
                attention = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    tokens = encoded[i].ids
                    ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                    attention[row, :len(tokens)] = 1
                results = self._readout(ids.to(self.device), attention.to(self.device),
                                        [encoded[i].positions for i in chunk])
                for i, result in zip(chunk, results):
                    out[i] = result.cpu().numpy()
        return out

    def close(self) -> None:
        self.net = self.head = self._rows = None
