"""The DPO-ST loop over our stages and trainers, every product kept in one folder, resumable.

Warm-up: SFT of ``--model`` on the labelled problems (their reference solutions). Then,
per iteration k (``method`` dpo-st):

1. the sample stage draws ``samples`` rationales per question from iteration k-1's SFT
   model (``iter{k}/samples.parquet``);
2. DPO-ST's pair selection (:mod:`stepdata.pairs.dpo_st`) makes whole-rationale DPO pairs
   (``iter{k}/pairs.parquet``), and the DPO trainer trains that SFT model on them
   (``iter{k}/model-dpo``);
3. the sample stage draws rationales from the DPO model (``iter{k}/pseudo_samples.parquet``);
   the right ones become pseudo-labels (``iter{k}/pseudo.parquet``, :mod:`.pseudo`);
4. SFT on labelled + pseudo-labelled problems (``iter{k}/sft_data.parquet``) makes
   ``iter{k}/model-sft``, starting from ``--model`` (``sft_init`` base, as DPO-ST) or from
   the DPO model (``last``).

``method`` st is plain self-training: no pairs and no DPO, pseudo-labels from the SFT model.
With evaluation problems, every model is scored greedily (``iter{k}/eval-*.json``).
``selftrain.json`` (the manifest) and ``report.md`` are rewritten after every step.

Resuming: a product is finished when its file is there (tables and JSON are written
atomically, a sample stage's table only once complete, a model's ``train_report.json``
last), so a run killed at any moment and started again with the same command skips what
is finished, resumes a sample stage from its finished batches and redoes the rest. The
manifest records the settings the products depend on (``identity``: the config but
``iterations``, the model, fingerprints of the problems tables, the engine); a run with any
of them changed is refused, naming each change, as a stage refuses a changed config.
Making a product again removes the products made after it (they were made from the old
one), so nothing stale is ever reused. One run at a time holds ``selftrain.lock``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from stepdata.generation.engine_config import EngineConfig
from stepdata.io import read_metadata, read_table, write_table, write_text_atomic
from stepdata.pairs.dpo_st import PairSelection
from stepdata.pipeline.lock import OutputLock
from stepdata.pipeline.run import ConfigChanged, config_diff, table_fingerprint
from stepdata.prompts import load_prompt
from stepdata.secrets import scrub_object
from stepdata.selftrain.config import SelfTrainConfig
from stepdata.selftrain.pseudo import pseudo_labels

MANIFEST = "selftrain.json"
REPORT = "report.md"


class _Engines:
    """One loaded engine at a time, shared by the sampling and the evaluation of the same model."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.handles: dict[str, Any] = {}

    def handle(self, model: Path) -> Any:
        from stepdata.pipeline.block import EngineHandle

        key = str(model)
        for other in [m for m in self.handles if m != key]:
            self.handles.pop(other).close()
        if key not in self.handles:
            self.handles[key] = EngineHandle(self.config.with_model(key))
        return self.handles[key]

    def release(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def _finished(path: Path) -> bool:
    """Whether a product is there: a model folder with its train_report.json, or the file itself."""
    return (path / "train_report.json").exists() if path.name.startswith("model-") else path.exists()


def _remove(path: Path) -> None:
    """Delete a product and what a stage keeps beside it (its summary and its batches)."""
    if path.name.startswith("model-"):
        shutil.rmtree(path, ignore_errors=True)
        return
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".summary.json").unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".parts"), ignore_errors=True)


def _train_record(report: dict[str, Any], init: Path, out: Path) -> dict[str, Any]:
    hyper = report.get("hyperparameters") or {}
    return {"model": str(out), "init": str(init), "method": report.get("method"),
            "train_loss": report.get("train_loss"), "data": report.get("data"),
            "optimizer_steps": hyper.get("optimizer_steps"), "learning_rate": hyper.get("learning_rate"),
            "beta": hyper.get("beta"), "seconds": report.get("seconds")}


class SelfTrainRun:
    """One self-training run into ``out`` (see the module doc); :meth:`run` does it and returns the manifest."""

    def __init__(self, out: str | Path, model: str | Path, problems: pd.DataFrame,
                 config: SelfTrainConfig = SelfTrainConfig(), *, engine: EngineConfig | None = None,
                 eval_problems: pd.DataFrame | None = None, data_label: str = "problems",
                 eval_label: str = "eval problems", echo: Callable[[str], None] | None = None) -> None:
        engine = engine or EngineConfig()
        if engine.backend == "openai":
            raise ValueError("selftrain trains the models it samples from, so it needs a local engine "
                             "(backend auto, vllm or hf), not a server")
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model {model} is not a folder")
        self.out = Path(out)
        self.base = Path(model).resolve()
        self.config = config
        self.engine = engine
        self.problems = problems.reset_index(drop=True)
        self.eval_problems = None if eval_problems is None else eval_problems.reset_index(drop=True)
        self.data_label, self.eval_label = data_label, eval_label
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.template = load_prompt(config.template)
        self.engines = _Engines(engine)
        self.warmup_model = None if config.warmup_model is None else Path(config.warmup_model).resolve()
        if self.warmup_model is not None and not self.warmup_model.is_dir():
            raise FileNotFoundError(f"warmup_model {config.warmup_model} is not a model folder")
        self._check_problems()
        self.manifest: dict[str, Any] = {}
        self.start = time.monotonic()

    # -- where things go --------------------------------------------------------------------------

    def folder(self, iteration: int) -> Path:
        return self.out / f"iter{iteration}"

    @property
    def problems_path(self) -> Path:
        return self.out / "problems.parquet"

    def order(self) -> list[Path]:
        """Every product in the order the loop makes them (what is made later depends on what came before)."""
        dpo = self.config.method == "dpo-st"
        trained = self.config.warmup and self.config.warmup_model is None
        products = [self.folder(0) / "model-sft"] if trained else []
        products += [self.folder(0) / "eval-sft.json"]
        for k in range(1, self.config.iterations + 1):
            here = self.folder(k)
            if dpo:
                products += [here / "samples.parquet", here / "pairs.parquet", here / "model-dpo"]
            products += [here / "pseudo_samples.parquet"] + ([here / "eval-dpo.json"] if dpo else [])
            products += [here / "pseudo.parquet", here / "sft_data.parquet", here / "model-sft",
                         here / "eval-sft.json"]
        return products

    def _making(self, product: Path) -> None:
        """About to make ``product``: what was made after it came from its old version and is removed."""
        order = self.order()
        for later in order[order.index(product) + 1:]:
            if _finished(later) or later.exists():
                self.echo(f"[selftrain] removing {later.relative_to(self.out)}: it was made after "
                          f"{product.relative_to(self.out)}, which is being made again")
                _remove(later)

    def _say(self, line: str) -> None:
        self.echo(f"[selftrain {time.monotonic() - self.start:6.0f}s] {line}")

    # -- inputs and identity ------------------------------------------------------------------------

    def _check_problems(self) -> None:
        """Labelled problems are required: the warm-up and the reference positives need solutions."""
        for column in ("problem_id", "question", "answer", "solution"):
            if column not in self.problems.columns:
                raise ValueError(f"the training problems have no {column!r} column")
        keys = self.problems["problem_id"].astype(str)
        if keys.duplicated().any():
            raise ValueError(f"the training problems repeat problem_id {keys[keys.duplicated()].iloc[0]!r}")
        labelled = self.problems["solution"].map(lambda s: isinstance(s, str) and bool(s.strip()))
        if not labelled.any():
            raise ValueError(f"none of the {len(self.problems)} training problems has a reference solution "
                             "(column solution): self-training starts from labelled data")

    def identity(self) -> dict[str, Any]:
        """What every product depends on; a resumed run must have the same (``iterations`` may change)."""
        return {**self.config.identity(), "model": str(self.base),
                "warmup_model": None if self.warmup_model is None else str(self.warmup_model),
                "problems_table": table_fingerprint(self.problems),
                "eval_table": None if self.eval_problems is None else table_fingerprint(self.eval_problems),
                "engine": {"backend": self.engine.backend, "engine_options": list(self.engine.engine_options)}}

    def _check_identity(self) -> None:
        path = self.out / MANIFEST
        if not path.exists():
            return
        try:
            recorded = json.loads(path.read_text())["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigChanged(f"{path} does not read as a selftrain manifest, so what {self.out} holds cannot be "
                                "checked against this run's settings; give another --out") from None
        changes = config_diff(recorded, self.identity())
        if changes:
            raise ConfigChanged(f"{self.out} holds a self-training run made with other settings; changed: "
                                f"{'; '.join(changes)}. Rerun with the old settings, or give another --out")

    def _write_inputs(self) -> None:
        if not self.problems_path.exists():
            write_table(self.problems, self.problems_path, "problems", config={"selftrain": "training problems",
                                                                               "source": self.data_label})
        if self.eval_problems is not None and not (self.out / "eval_problems.parquet").exists():
            write_table(self.eval_problems, self.out / "eval_problems.parquet", "problems",
                        config={"selftrain": "evaluation problems", "source": self.eval_label})

    # -- the manifest ---------------------------------------------------------------------------------

    def _save(self, status: str = "running") -> None:
        from stepdata import __version__
        from stepdata.selftrain.report import render_report

        labelled = int(self.problems["solution"].map(lambda s: isinstance(s, str) and bool(s.strip())).sum())
        self.manifest.update({
            "kind": "selftrain", "stepdata_version": __version__, "status": status, "out": str(self.out),
            "identity": self.identity(), "config": dataclasses.asdict(self.config),
            "data": {"label": self.data_label, "problems": len(self.problems), "labelled": labelled},
            "eval": None if self.eval_problems is None else {"label": self.eval_label,
                                                             "problems": len(self.eval_problems)},
            "seconds_this_run": round(time.monotonic() - self.start, 1)})
        self.manifest.setdefault("iterations", [])
        manifest = scrub_object(self.manifest)
        write_text_atomic(self.out / MANIFEST, json.dumps(manifest, indent=1, default=str))
        write_text_atomic(self.out / REPORT, render_report(manifest))

    def _record(self, iteration: int, key: str, value: Any) -> None:
        if iteration == 0:
            self.manifest.setdefault("warmup", {})[key] = value
        else:
            records = self.manifest.setdefault("iterations", [])
            while len(records) < iteration:
                records.append({"iteration": len(records) + 1})
            records[iteration - 1][key] = value
        self._save()

    def _note(self, iteration: int, note: str) -> None:
        records = self.manifest.setdefault("iterations", [])
        while len(records) < iteration:
            records.append({"iteration": len(records) + 1})
        notes = records[iteration - 1].setdefault("notes", [])
        if note not in notes:
            notes.append(note)
        self._say(f"iteration {iteration}: {note}")

    # -- steps -----------------------------------------------------------------------------------------

    def _train(self, method: str, init: Path, data: Any, out: Path, what: str) -> dict[str, Any]:
        """Train ``method`` (sft or dpo) from ``init`` into ``out``, unless it is there."""
        if not _finished(out):
            self._making(out)
            self.engines.release()  # training needs the memory an engine holds
            from trainers.train import train

            self._say(f"{out.relative_to(self.out)}: training {method} from {init.name} on {what} ...")
            train(method, str(init), data, out, **self.config.train_options(method))
        return _train_record(json.loads((out / "train_report.json").read_text()), init, out)

    def _sample(self, iteration: int, name: str, model: Path) -> tuple[Path, dict[str, Any]]:
        """The sample stage over the training problems with ``model`` (resumable batch by batch)."""
        from stepdata.pipeline.executor import LocalExecutor, RunOptions
        from stepdata.pipeline.lineage import problems_reference
        from stepdata.pipeline.sample import SampleStage, rollout_counts

        path = self.folder(iteration) / f"{name}.parquet"
        if not _finished(path):
            self._making(path)
            self._say(f"{path.relative_to(self.out)}: {self.config.samples} rationales per question from "
                      f"{model.name} ...")
            block = SampleStage(self.engines.handle(model), self.config.sample_config(iteration))
            block.inherit({"problems": problems_reference(str(self.problems_path))})
            options = RunOptions(out=str(path), batch_size=self.config.sample_batch_size)
            LocalExecutor(options, echo=self.echo).run(block, self.problems)
        counts = rollout_counts(read_table(path, kind="rollouts"))
        return path, {"path": str(path), "model": str(model), **counts}

    def _evaluate(self, iteration: int, name: str, model: Path) -> dict[str, Any] | None:
        """Greedy accuracy of ``model`` on the evaluation problems (None without them)."""
        if self.eval_problems is None:
            return None
        path = self.folder(iteration) / f"eval-{name}.json"
        if not path.exists():
            from stepdata.evaluate import evaluate_model
            from stepdata.generation import SamplingConfig
            from stepdata.solve.stats import wilson_interval

            self._say(f"{path.relative_to(self.out)}: scoring {model.name} on {len(self.eval_problems)} problems ...")
            result = evaluate_model(
                self.engines.handle(model).get(), self.eval_problems, template=self.config.template,
                data=self.eval_label,
                sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=self.config.max_tokens, seed=0,
                                        calculator=self.config.calculator))
            record = {"model": str(model), "data": self.eval_label, "problems": result.problems,
                      "correct": result.correct, "accuracy": result.accuracy,
                      "ci95": wilson_interval(result.correct, result.samples), "errors": result.errors,
                      "truncated": result.truncated, "completion_tokens": result.completion_tokens,
                      "seconds": result.seconds, "calculator": self.config.calculator}
            write_text_atomic(path, json.dumps(record, indent=1))
            self._say(f"accuracy of iteration {iteration}'s {name} model: {result.accuracy:.1%}")
        return json.loads(path.read_text())

    def _sources(self, iteration: int, name: str) -> list[Path]:
        first = 1 if self.config.pool else iteration
        return [self.folder(j) / f"{name}.parquet" for j in range(first, iteration + 1)]

    def _pairs(self, iteration: int) -> tuple[Path, dict[str, Any]]:
        path = self.folder(iteration) / "pairs.parquet"
        if not _finished(path):
            self._making(path)
            sources = self._sources(iteration, "samples")
            selection = PairSelection(self.config.pairs_per_question, self.config.jaccard,
                                      self.config.reference_positive)
            table, stats = selection.pairs_table(self.problems, [read_table(p, kind="rollouts") for p in sources],
                                                 self.template)
            write_table(table, path, "pairs", config={
                "selftrain": "dpo-st pairs", "iteration": iteration, "sources": [str(p) for p in sources],
                "pairs_per_question": self.config.pairs_per_question, "jaccard": self.config.jaccard,
                "reference_positive": self.config.reference_positive, "stats": stats})
        return path, read_metadata(path)["config"]["stats"] | {"path": str(path)}

    def _pseudo(self, iteration: int) -> tuple[Path, dict[str, Any]]:
        path = self.folder(iteration) / "pseudo.parquet"
        if not _finished(path):
            self._making(path)
            sources = self._sources(iteration, "pseudo_samples")
            table, stats = pseudo_labels(self.problems, [read_table(p, kind="rollouts") for p in sources],
                                         self.template, threshold=self.config.jaccard,
                                         per_question=self.config.pseudo_per_question)
            write_table(table, path, "problems", config={
                "selftrain": "pseudo-labels", "iteration": iteration, "sources": [str(p) for p in sources],
                "jaccard": self.config.jaccard, "stats": stats})
        return path, read_metadata(path)["config"]["stats"] | {"path": str(path)}

    def _sft_data(self, iteration: int, pseudo: Path) -> tuple[Path, dict[str, Any]]:
        path = self.folder(iteration) / "sft_data.parquet"
        if not _finished(path):
            self._making(path)
            labelled = self.problems[self.problems["solution"].map(lambda s: isinstance(s, str) and bool(s.strip()))]
            extra = read_table(pseudo, kind="problems")
            data = pd.concat([labelled, extra], ignore_index=True) if len(extra) else labelled.reset_index(drop=True)
            write_table(data, path, "problems", config={"selftrain": "labelled + pseudo-labelled",
                                                        "iteration": iteration, "labelled": len(labelled),
                                                        "pseudo_labels": len(extra)})
        config = read_metadata(path)["config"]
        return path, {"path": str(path), "labelled": config["labelled"], "pseudo_labels": config["pseudo_labels"]}

    # -- the loop ---------------------------------------------------------------------------------------

    def _warmup(self) -> Path:
        given = self.warmup_model if self.warmup_model is not None else None if self.config.warmup else self.base
        if given is not None:
            self.manifest["warmup"] = {"model": str(given), "given": True}
            self._record(0, "eval", self._evaluate(0, "sft", given))
            return given
        out = self.folder(0) / "model-sft"
        record = self._train("sft", self.base, self.problems, out, f"{len(self.problems)} labelled problems")
        self._record(0, "train", record)
        self._record(0, "model", str(out))
        self._record(0, "eval", self._evaluate(0, "sft", out))
        return out

    def _iteration(self, k: int, model: Path) -> Path:
        """Iteration ``k`` from the SFT model ``model``; returns the iteration's SFT model."""
        here = self.folder(k)
        source = model  # whose rationales become pseudo-labels
        if self.config.method == "dpo-st":
            _, samples = self._sample(k, "samples", model)
            self._record(k, "samples", samples)
            pairs_path, pairs = self._pairs(k)
            self._record(k, "pairs", pairs)
            if pairs["pairs"] == 0:
                self._note(k, "no DPO pairs (no question had both a positive and a negative): DPO skipped, the SFT "
                              "model goes on as this iteration's DPO model")
                self._record(k, "dpo", {"skipped": "no pairs", "model": str(model)})
            else:
                source = here / "model-dpo"
                self._record(k, "dpo", self._train("dpo", model, pairs_path, source,
                                                   f"{pairs['pairs']} pairs of {pairs['with_pairs']} questions"))
        _, drawn = self._sample(k, "pseudo_samples", source)
        self._record(k, "pseudo_samples", drawn)
        if self.config.method == "dpo-st":
            self._record(k, "eval_dpo", self._evaluate(k, "dpo", source))
        pseudo_path, pseudo = self._pseudo(k)
        self._record(k, "pseudo", pseudo)
        if pseudo["pseudo_labels"] == 0:
            if pseudo.get("right_rationales"):  # right ones exist, but each is a near-copy of the reference or another
                why = (f"all {pseudo['right_rationales']} right rationales of {source.name} were near-copies (word "
                       f"Jaccard above {self.config.jaccard}) of the reference solution or of each other, so merged "
                       "away")
            else:
                why = f"none of the {drawn['total']} rationales of {source.name} reached the gold answer"
            self._note(k, f"no pseudo-labels ({why}): SFT trained on the labelled data only")
        data_path, data = self._sft_data(k, pseudo_path)
        self._record(k, "sft_data", data)
        init = self.base if self.config.sft_init == "base" else source
        out = here / "model-sft"
        what = f"{data['labelled']} labelled + {data['pseudo_labels']} pseudo-labelled problems"
        self._record(k, "sft", self._train("sft", init, read_table(data_path, kind="problems"), out, what))
        self._record(k, "eval_sft", self._evaluate(k, "sft", out))
        return out

    def run(self) -> dict[str, Any]:
        """Run (or resume) the loop; returns the manifest (also in ``out/selftrain.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with OutputLock(self.out / "selftrain.lock", f"{self.out} (selftrain)"):
            self._check_identity()
            self._write_inputs()
            self.manifest = {}
            self._save()
            try:
                model = self._warmup()
                models = {"iter0/sft": str(model)}
                for k in range(1, self.config.iterations + 1):
                    model = self._iteration(k, model)
                    if self.config.method == "dpo-st":
                        models[f"iter{k}/dpo"] = self.manifest["iterations"][k - 1]["dpo"]["model"]
                    models[f"iter{k}/sft"] = str(model)
            finally:
                self.engines.release()
            self.manifest.update(models=models, final_model=str(model))
            self._save("finished")
            self._say(f"finished: final model {model}; report {self.out / REPORT}")
        return self.manifest


def run_selftrain(out: str | Path, model: str | Path, problems: pd.DataFrame,
                  config: SelfTrainConfig = SelfTrainConfig(), **options: Any) -> dict[str, Any]:
    """Run the DPO-ST loop into ``out`` (see :class:`SelfTrainRun` for ``options``); returns the manifest."""
    return SelfTrainRun(out, model, problems, config, **options).run()
