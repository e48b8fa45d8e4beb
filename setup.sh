#!/usr/bin/env bash
# Set up stepdata on a fresh machine: a virtual environment in .venv with the toolkit and its
# test tools installed from pyproject.toml. Safe to run again (it updates in place).
#
#   STEPDATA_EXTRAS  extras to install (default: test). Add hf, train or vllm for model engines;
#                    torch is then installed first, pinned to 2.13.0 (on CPU-only machines an
#                    unpinned torch pulls several GB of CUDA packages).
#   PYTHON           interpreter used to create .venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
EXTRAS=${STEPDATA_EXTRAS:-test}
TORCH_VERSION=2.13.0

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
case ",$EXTRAS," in
    *,hf,*|*,train,*|*,vllm,*)
        .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}" ;;
esac
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
.venv/bin/stepdata --version
