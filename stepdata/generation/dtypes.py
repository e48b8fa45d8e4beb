"""Which floating-point type an engine runs a model in, chosen before the engine loads.

Left to itself vLLM runs a float32 checkpoint in bfloat16 (its "auto" downcasts
float32), and nothing in a run's output says so; a stage's samples then differ from
what the same model gives in float32 (a near-tie in the logits can flip a token).
Our backends therefore choose the dtype themselves, record it on the generator
(``generator.dtype``) and in every stage table's metadata (the engine description
in the run config). The choice needs no engine and at most ``import torch``, so a
command can put it into its run config before it checks for finished batches.

Policy (vLLM): the dtype named in the model's ``config.json`` (``dtype``, or
``torch_dtype`` as older transformers wrote it), unless the device cannot run it:
bfloat16 on a GPU older than Ampere falls back to float16 with a logged warning.
An explicit ``dtype=`` (``--engine-option dtype=...``) always wins.
"""

from __future__ import annotations

import json
from pathlib import Path

ALIASES = {
    "float": "float32", "fp32": "float32", "torch.float32": "float32",
    "half": "float16", "fp16": "float16", "torch.float16": "float16",
    "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}
DTYPES = ("float32", "float16", "bfloat16")


def canonical_dtype(name: object) -> str:
    """``"float32"``, ``"float16"`` or ``"bfloat16"`` for any usual spelling (``"bf16"``, ``torch.float16``, ...)."""
    text = str(name).strip().lower()
    text = ALIASES.get(text, text)
    if text not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {DTYPES} (or half, float, bf16, fp16, fp32)")
    return text


def model_dtype(model: str | Path) -> str | None:
    """The dtype a model folder's ``config.json`` names; None when it has no readable config.

    A config that names no dtype is float32: that is what transformers loads it as.
    """
    path = Path(model) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    named = config.get("dtype") or config.get("torch_dtype")
    text = config.get("text_config")  # multimodal configs keep it on the language model
    if named is None and isinstance(text, dict):
        named = text.get("dtype") or text.get("torch_dtype")
    try:
        return canonical_dtype(named) if named is not None else "float32"
    except ValueError:
        return None


def cuda_available() -> bool:
    """Whether torch sees a GPU (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def device_runs(dtype: str, *, cuda: bool | None = None) -> bool:
    """Whether the device the engines will use can compute in ``dtype``.

    Only bfloat16 can be missing: NVIDIA GPUs before compute capability 8.0 lack it
    (the same line vLLM draws); CPUs run it (vLLM's CPU build supports it on x86 and
    Arm Linux). float16 and float32 run everywhere the engines do.
    """
    if dtype != "bfloat16":
        return True
    if cuda is None:
        cuda = cuda_available()
    if not cuda:
        return True
    import torch

    return torch.cuda.get_device_capability() >= (8, 0)


def choose_vllm_dtype(model: str | Path, requested: object = "auto") -> tuple[str, str | None]:
    """The dtype vLLM is told to use, and a warning when the model's own had to be changed.

    ``requested`` other than "auto"/None is used as given (canonical name). Otherwise
    the model's own dtype, or float16 where the device lacks bfloat16; "auto" (vLLM
    decides) only when the model has no readable config (e.g. a hub name).
    """
    if requested not in (None, "auto"):
        return canonical_dtype(requested), None
    own = model_dtype(model)
    if own is None:
        return "auto", None
    if device_runs(own):
        return own, None
    return "float16", f"{model} is stored in {own}, which this GPU cannot compute in; running it in float16"


def choose_hf_dtype(device: str, requested: object = None) -> str:
    """The dtype the transformers backend loads a model in.

    Given: as given. Otherwise float32 on CPU (CPU bfloat16 matmuls are slower there
    and the exact-continuation checks are made in float32) and bfloat16 on a GPU
    that has it, float16 on one that does not.
    """
    if requested not in (None, "auto"):
        return canonical_dtype(requested)
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if device_runs("bfloat16", cuda=True) else "float16"
