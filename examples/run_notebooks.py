"""Execute the example notebooks headlessly (nbclient, the python3 kernel of ipykernel); fail on any cell error.

CI runs it after the main job, against the quickstart's output:

    .venv/bin/python examples/run_notebooks.py --run runs/quickstart --out runs/notebooks

Each notebook runs in a fresh kernel started in the repository root, with
STEPDATA_RUN set to ``--run`` and STEPDATA_AUDIT_OUT to ``--out`` (where the
notebooks write their HTML pages); the executed notebooks are saved there too,
outputs included, so they can be opened or rendered (``jupyter nbconvert --to html``).
The first cell error stops that notebook; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOTEBOOKS = ("audit_localized.ipynb", "compare_localizers.ipynb", "audit_pairs.ipynb")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside (the kernel inherits this process's env)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(path: Path, run: Path, out: Path, timeout: int = 600) -> Path:
    """Run the notebook at ``path`` against the run folder ``run``; the executed notebook goes to ``out``.

    Raises nbclient's CellExecutionError (naming the cell and the error) at the first failing cell.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    out.mkdir(parents=True, exist_ok=True)
    env = {"STEPDATA_RUN": str(run.resolve()), "STEPDATA_AUDIT_OUT": str(out.resolve()),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with _environment(env):
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}})
        client.execute()
    executed = out / path.name
    nbformat.write(notebook, executed)
    return executed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help=f"notebooks to run (default: {', '.join(NOTEBOOKS)})")
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "quickstart", help="the run folder they read")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "notebooks",
                        help="where the executed notebooks and their pages go")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may take")
    args = parser.parse_args(argv)
    if not (args.run / "localized.parquet").exists():
        print(f"{args.run} holds no localized.parquet: run the main job first "
              "(stepdata quickstart --out runs/quickstart) or give --run", file=sys.stderr)
        return 1
    from nbclient.exceptions import CellExecutionError

    failed = 0
    for path in args.notebooks or [HERE / name for name in NOTEBOOKS]:
        start = time.monotonic()
        try:
            executed = execute(path, args.run, args.out, timeout=args.timeout)
        except CellExecutionError as exc:
            failed += 1
            print(f"FAILED {path}: {exc}", file=sys.stderr)
            continue
        print(f"ran {path.name} in {time.monotonic() - start:.1f}s -> {executed}")
    if failed:
        print(f"{failed} notebook(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
