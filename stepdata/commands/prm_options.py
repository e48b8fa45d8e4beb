"""How a command that builds an engine from ``--backend``/``--model`` points the prm localizer at its PRM.

The prm localizer runs its own model (:mod:`stepdata.localize.prm`), so where a command's
``--model`` would otherwise be the judge or the policy (``stepdata bench processbench
--localizer prm --model DIR``), it is the PRM, and ``--backend`` picks the PRM's engine:
``vllm`` or ``hf``, ``auto`` meaning vllm when it is installed. ``--prm-model`` and an
explicit ``--prm-engine`` win. A server (``--backend openai``) cannot run a PRM.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource


def prm_settings(settings: dict[str, Any], backend: str, model: str | None) -> dict[str, Any]:
    """``settings`` (the parsed LocalizeConfig options) with the PRM and its engine filled in from the engine options."""
    from stepdata.generation.base import resolve_backend

    if backend == "openai":
        raise click.UsageError("--localizer prm runs the PRM itself (--backend vllm or hf): an OpenAI-compatible "
                               "server cannot score steps")
    chosen = dict(settings)
    if chosen.get("prm_model") is None:
        if model is None:
            raise click.UsageError("--localizer prm needs the PRM's folder: --model DIR (or --prm-model DIR)")
        chosen["prm_model"] = model
    source = click.get_current_context().get_parameter_source("prm_engine")
    if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        chosen["prm_engine"] = resolve_backend(backend)
    return chosen
