"""SLURM scripts for one recipe step: an array job that runs its shards, a merge job, a submit script.

``stepdata slurm RECIPE --step NAME --ranks N`` writes, in ``--out``:

- ``NAME.array.sbatch``: ``#SBATCH --array=0-(N-1)``; task i runs
  ``stepdata run RECIPE --only NAME --rank i --world-size N`` (the recipe's ``--set`` vars
  passed through). The rank is the array index itself and the world size is written in,
  so a failed task resubmitted alone (``sbatch --array=3 NAME.array.sbatch``) is still
  rank 3 of N, and resumes where it stopped;
- ``NAME.merge.sbatch``: ``stepdata merge --out STEP_OUT`` (the step's output as the
  recipe writes it; the shards are found by name, checked and joined);
- ``submit.sh``: the array, then the merge with ``--dependency=afterok`` on it.

Each script first changes to the folder it was generated from (relative recipe paths
stay right) and runs ``--setup`` (e.g. ``source .venv/bin/activate``). After the merge,
``stepdata run RECIPE`` goes on with the steps after NAME: the merged output is what
an unsharded run of that step finds finished.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stepdata.io import write_text_atomic
from stepdata.recipe import STAGE_STEPS, RecipeError, load_recipe, parse_overrides


@dataclass(frozen=True)
class SlurmResources:
    """What each task asks SLURM for (None: the cluster's default)."""

    partition: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None

    def lines(self, *, gpus: bool = True) -> list[str]:
        """The ``#SBATCH`` lines (``gpus=False``: the merge, which loads no model)."""
        options = [("partition", self.partition), ("gres", f"gpu:{self.gpus}" if gpus and self.gpus else None),
                   ("cpus-per-task", self.cpus), ("mem", self.mem), ("time", self.time)]
        return [f"#SBATCH --{name}={value}" for name, value in options if value is not None]


@dataclass(frozen=True)
class SlurmScripts:
    """The files written and the step output the merge makes."""

    array: Path
    merge: Path
    submit: Path
    output: Path


def _script(name: str, sbatch: list[str], setup: str | None, command: str) -> str:
    head = ["#!/bin/bash", f"#SBATCH --job-name={name}", *sbatch, "set -euo pipefail",
            f"cd {shlex.quote(os.getcwd())}"]
    return "\n".join([*head, *([setup] if setup else []), command]) + "\n"


def write_slurm_scripts(recipe: str, step: str, ranks: int, out: str | os.PathLike, *,
                        overrides: Sequence[str] = (), resources: SlurmResources = SlurmResources(),
                        setup: str | None = None, stepdata: str = "stepdata") -> SlurmScripts:
    """Write the array, merge and submit scripts for ``step`` of ``recipe`` in ``out`` (see the module doc).

    ``overrides``: the recipe's ``--set NAME=VALUE`` items, checked now and passed to every task;
    ``stepdata``: how the nodes call stepdata (after ``setup``). Refuses a step that is no stage.
    """
    if ranks < 1:
        raise RecipeError(f"--ranks must be at least 1, not {ranks}")
    loaded = load_recipe(recipe, parse_overrides(tuple(overrides)))
    _, found = loaded.step(step)
    if found["do"] not in STAGE_STEPS:
        raise RecipeError(f"only a stage step ({', '.join(STAGE_STEPS)}) runs as shards; {step!r} is a "
                          f"`do: {found['do']}` step")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    output = loaded.path(found["out"])
    recipe_arg = str(Path(recipe).resolve()) if Path(recipe).exists() else recipe
    sets = "".join(f" --set {shlex.quote(item)}" for item in overrides)
    logs = shlex.quote(str(folder.resolve() / step))
    array = folder / f"{step}.array.sbatch"
    write_text_atomic(array, _script(
        f"stepdata-{step}", [f"#SBATCH --array=0-{ranks - 1}", f"#SBATCH --output={logs}.%A_%a.log",
                             *resources.lines()], setup,
        f"{stepdata} run {shlex.quote(recipe_arg)}{sets} --only {shlex.quote(step)} "
        f'--rank "$SLURM_ARRAY_TASK_ID" --world-size {ranks}'))
    merge = folder / f"{step}.merge.sbatch"
    write_text_atomic(merge, _script(f"stepdata-{step}-merge", [f"#SBATCH --output={logs}.merge.%j.log",
                                                                 *resources.lines(gpus=False)], setup,
                                     f"{stepdata} merge --out {shlex.quote(str(output))}"))
    submit = folder / "submit.sh"
    write_text_atomic(submit, "#!/bin/bash\nset -euo pipefail\n"
                              f"jid=$(sbatch --parsable {shlex.quote(str(array.resolve()))}) && "
                              f"sbatch --dependency=afterok:${{jid%%;*}} {shlex.quote(str(merge.resolve()))}\n")
    for path in (array, merge, submit):
        path.chmod(0o755)
    return SlurmScripts(array, merge, submit, output)


def describe(scripts: SlurmScripts, recipe: str, overrides: Mapping[str, str] | Sequence[str] = ()) -> str:
    """How to submit the scripts and go on with the recipe, for the user."""
    sets = "".join(f" --set {shlex.quote(item)}" for item in overrides)
    return (f"wrote {scripts.array}, {scripts.merge} and {scripts.submit}\n"
            f"submit:   bash {scripts.submit}     (the array, then the merge once every task succeeded)\n"
            f"merged:   {scripts.output}\n"
            f"then:     stepdata run {shlex.quote(recipe)}{sets}     (the merged step is found finished)")
