"""The process ``stepdata serve`` starts: vLLM's OpenAI server, with the engine log level applied first.

vLLM's server and the engine processes it spawns log a few warnings (Triton's,
for one) before vLLM configures its logging, straight to Python's last-resort
handler. Running the server from this module applies the level ``stepdata``
chose (``$STEPDATA_ENGINE_LOG_LEVEL``) at import: in the server, and in every
process it spawns, since those import their parent's main module again. Arguments
are vLLM's server flags, unchanged.

When the server has shut down, the interpreter's own teardown would make
Triton's compiled extension list some hundred "leaked" objects on stderr
(nanobind's reference-leak report, about objects the process is freeing
anyway). With quiet engines the process ends right after the exit handlers
(vLLM's included) have run, before that teardown.
"""

import os
import sys

from stepdata.generation.engine_logs import LEVEL_VARIABLE, inherit_engine_logs

inherit_engine_logs()


def _run() -> None:
    import atexit
    import importlib

    from stepdata.generation.vllm_backend import SERVER_MODULE

    status = 0

    def end_after_exit_handlers() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    if os.environ.get(LEVEL_VARIABLE):  # quiet engines: registered first, so it runs after every other handler
        atexit.register(end_after_exit_handlers)
    try:
        importlib.import_module(SERVER_MODULE).main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    except BaseException:
        status = 1
        raise


if __name__ == "__main__":
    _run()
