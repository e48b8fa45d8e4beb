"""How much the engines (vLLM, torch, transformers, TRL) may print: quiet unless asked.

A vLLM start on CPU printed about 140 lines before the first sample (Triton and
NUMA notices, a warning per weight when a float32 checkpoint is downcast, progress
bars, "force killing" at shutdown), on stdout, in the middle of a command's JSON.
Our own progress lines and summaries are the output a user reads, so by default
the engines print only errors; ``stepdata -v`` lets their warnings (and load
progress bars) through, ``-vv`` their info lines, ``-vvv`` their debug lines.

The engines start worker processes, which inherit only the environment, so the
levels travel as environment variables (each engine's own: ``VLLM_LOGGING_LEVEL``,
``TRANSFORMERS_VERBOSITY``, ``TORCH_CPP_LOG_LEVEL``, ``PYTHONWARNINGS``, ...), set
before the engines are imported. A variable the user set is never overridden.
vLLM's log stream goes to stderr, so stdout carries only what a command prints.
"""

from __future__ import annotations

import logging
import os
import warnings

# stepdata -v count -> the engines' log level
_LEVELS = {0: "ERROR", 1: "WARNING", 2: "INFO", 3: "DEBUG"}
_ENGINE_LOGGERS = ("vllm", "transformers", "trl", "torch", "accelerate", "datasets", "peft", "huggingface_hub")
# Python warnings engines raise about their own internals (deprecations between their versions,
# multiprocessing's resource tracker at vLLM shutdown): not actionable by a stepdata user.
_QUIET_WARNINGS = "ignore::FutureWarning,ignore::DeprecationWarning,ignore:resource_tracker:UserWarning"
_ENGINE_MODULES = r"(vllm|torch|transformers|trl|accelerate|datasets|peft|huggingface_hub|multiprocessing)(\.|$)"

LEVEL_VARIABLE = "STEPDATA_ENGINE_LOG_LEVEL"
_set_by_us: dict[str, str] = {}
_quiet = False


def _put(name: str, value: str | None) -> None:
    """Set (or, with None, remove) an environment variable unless the user set it themselves."""
    current = os.environ.get(name)
    if current is not None and _set_by_us.get(name) != current:
        return  # the user's own setting wins
    if value is None:
        os.environ.pop(name, None)
        _set_by_us.pop(name, None)
    else:
        os.environ[name] = value
        _set_by_us[name] = value


def configure_engine_logs(verbose: int = 0) -> None:
    """Quiet the engines (``verbose=0``) or let them speak (1: warnings, 2: info, 3: debug).

    Call it before an engine is imported (the CLI does, first thing): the engines
    read most of these settings once, at import or at process start.
    """
    global _quiet
    level = _LEVELS[min(max(verbose, 0), 3)]
    _quiet = verbose <= 0
    _put("VLLM_LOGGING_LEVEL", level)
    _put("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    _put("TRANSFORMERS_VERBOSITY", level.lower() if verbose < 3 else "debug")
    _put("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1" if _quiet else None)
    _put("HF_HUB_DISABLE_PROGRESS_BARS", "1" if _quiet else None)  # "Loading weights" bars
    _put("TORCH_CPP_LOG_LEVEL", "ERROR" if _quiet else None)  # torch's C++ notices (NUMA binding, ...)
    _put("PYTHONWARNINGS", _QUIET_WARNINGS if _quiet else None)  # worker processes
    _put(LEVEL_VARIABLE, level if _quiet else None)
    inherit_engine_logs()
    if _quiet:  # this process (PYTHONWARNINGS is read at start-up only)
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=_ENGINE_MODULES)


def inherit_engine_logs() -> None:
    """Apply the level :func:`configure_engine_logs` chose to this process's engine loggers.

    Worker processes (vLLM spawns its engine core and workers) import their modules
    before vLLM configures its logging there, and a warning logged in between goes to
    Python's last-resort handler ("Triton is installed, but ..." from every worker).
    They re-import the command's main module, which calls this at import: the level
    travels in ``$STEPDATA_ENGINE_LOG_LEVEL``. Without it the loggers follow the root logger.
    """
    level = os.environ.get(LEVEL_VARIABLE)
    for name in _ENGINE_LOGGERS:
        logging.getLogger(name).setLevel(getattr(logging, level, logging.ERROR) if level else logging.NOTSET)


def engines_quiet() -> bool:
    """Whether :func:`configure_engine_logs` asked for quiet engines (False until it is called)."""
    return _quiet
