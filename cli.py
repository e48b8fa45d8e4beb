"""The ``stepdata`` command: every stage and tool of the toolkit as a subcommand.

Each subcommand is a thin wrapper over a library call of the same name, so what
a user runs in a shell is what a notebook runs in Python.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import click

import stepdata
from stepdata.answers import AnswerCheckConfig, check_answer, extract_answer
from stepdata.io import SchemaError, read_metadata, read_table, write_table
from stepdata.loaders import KNOWN_SETS, BadRowError, load_problems
from stepdata.models import MODELS, fetch_model
from stepdata.prompts import list_prompts, load_prompt, prompts_dir
from stepdata.steps import split_steps


def _read_text_arg(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(stepdata.__version__, prog_name="stepdata")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Build step-level preference data for math reasoning, and train on it.

    \b
    Data sets by name (read from --data-dir or $STEPDATA_DATA_DIR, never downloaded):
      embedded[:N], gsm8k, gsm8k:train, math500, svamp, multiarith,
      processbench:gsm8k, processbench:math
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


@main.command("problems")
@click.argument("source")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Problems table to write (.parquet).")
@click.option("--format", "fmt", type=click.Choice(["gsm8k", "math", "svamp", "multiarith", "processbench", "generic"]),
              help="Data set format (detected when omitted).")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS",
              help="Map a column, e.g. --column question=prompt --column answer=target.")
@click.option("--skip-bad-rows", is_flag=True, help="Record bad rows in OUT.bad_rows.jsonl instead of failing.")
@click.option("--limit", type=int, help="Read at most this many problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Folder holding the named data sets.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for embedded problems.")
def problems_cmd(source: str, out: str, fmt: str | None, columns: tuple[str, ...], skip_bad_rows: bool,
                 limit: int | None, data_dir: str | None, seed: int) -> None:
    """Load SOURCE (a file or a data set name) and write it as a problems table."""
    mapping = {}
    for item in columns:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise click.BadParameter(f"{item!r} is not OURS=THEIRS", param_hint="--column")
        mapping[ours] = theirs
    try:
        df = load_problems(source, format=fmt, columns=mapping, skip_bad_rows=skip_bad_rows,
                           limit=limit, data_dir=data_dir, seed=seed)
    except (BadRowError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    config = {"command": "problems", "source": source, "format": fmt, "columns": mapping, "limit": limit, "seed": seed}
    write_table(df, out, "problems", config=config)
    bad = df.attrs.get("bad_rows", [])
    click.echo(f"wrote {len(df)} problems to {out}")
    if bad:
        bad_path = Path(out).with_suffix(".bad_rows.jsonl")
        bad_path.write_text("".join(json.dumps(r) + "\n" for r in bad), encoding="utf-8")
        click.echo(f"skipped {len(bad)} bad row(s); listed in {bad_path}", err=True)


@main.command("make-problems")
@click.option("--n", "count", type=int, default=100, show_default=True, help="How many problems.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-steps", type=click.IntRange(2, 6), default=2, show_default=True)
@click.option("--max-steps", type=click.IntRange(2, 6), default=6, show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
def make_problems_cmd(count: int, seed: int, min_steps: int, max_steps: int, out: str) -> None:
    """Generate embedded arithmetic word problems (no external data needed)."""
    if min_steps > max_steps:
        raise click.BadParameter("--min-steps is larger than --max-steps")
    df = stepdata.make_problems(count, seed=seed, min_steps=min_steps, max_steps=max_steps)
    write_table(df, out, "problems", config={"command": "make-problems", "n": count, "seed": seed,
                                             "min_steps": min_steps, "max_steps": max_steps})
    click.echo(f"wrote {len(df)} embedded problems to {out}")


@main.command("check")
@click.argument("gold")
@click.argument("pred")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds before a check gives up.")
@click.option("--no-fast-path", is_flag=True, help="Send even plain numbers to Math-Verify.")
def check_cmd(gold: str, pred: str, timeout: float, no_fast_path: bool) -> None:
    """Say whether answer PRED equals gold answer GOLD (gold first)."""
    verdict = check_answer(gold, pred, AnswerCheckConfig(timeout=timeout, fast_path=not no_fast_path))
    click.echo(json.dumps({"match": verdict.match, "status": verdict.status, "path": verdict.path,
                           "detail": verdict.detail}))


@main.command("extract")
@click.argument("text")
@click.option("--no-last-number", is_flag=True, help="Do not fall back to the last number in the text.")
def extract_cmd(text: str, no_last_number: bool) -> None:
    """Print the final answer stated in TEXT ('-' reads standard input)."""
    answer = extract_answer(_read_text_arg(text), last_number_fallback=not no_last_number)
    if answer is None:
        raise click.ClickException("no answer found")
    click.echo(answer)


@main.command("split")
@click.argument("text")
@click.option("--mode", type=click.Choice(["auto", "markers", "paragraphs", "lines"]), default="auto", show_default=True)
def split_cmd(text: str, mode: str) -> None:
    """Print the steps of TEXT ('-' reads standard input) as a JSON list."""
    click.echo(json.dumps(split_steps(_read_text_arg(text), mode), indent=2, ensure_ascii=False))


@main.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rows", type=int, default=5, show_default=True, help="How many rows to print.")
def show_cmd(path: str, rows: int) -> None:
    """Describe a stepdata table: kind, schema version, config, size and first rows."""
    meta = read_metadata(path)
    try:
        df = read_table(path)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"kind: {meta.get('kind', 'unknown (not written by stepdata)')}")
    click.echo(f"schema version: {meta.get('schema_version')}  written by stepdata {meta.get('stepdata_version')}")
    click.echo(f"config: {json.dumps(meta.get('config', {}))}")
    click.echo(f"rows: {len(df)}  columns: {', '.join(df.columns)}")
    if rows:
        with_pd = df.head(rows).to_string(max_colwidth=60)
        click.echo(with_pd)


@main.command("prompts")
@click.argument("name", required=False)
def prompts_cmd(name: str | None) -> None:
    """List the shipped prompt templates, or print template NAME."""
    if name is None:
        click.echo(f"templates in {prompts_dir()}:")
        for item in list_prompts():
            click.echo(f"  {item}")
        return
    try:
        template = load_prompt(name)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    for role, text in template.messages:
        click.echo(f"[{role}]\n{text}")


@main.group("model")
def model_group() -> None:
    """Get small real models without a model hub."""


@model_group.command("fetch")
@click.argument("name", type=click.Choice(sorted(MODELS)))
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Folder to put it in (default: the cache).")
@click.option("--force", is_flag=True, help="Build it again even if it is cached.")
def model_fetch_cmd(name: str, directory: str | None, force: bool) -> None:
    """Build model NAME as a local safetensors folder and print its path."""
    try:
        path = fetch_model(name, directory=directory, force=force)
    except (RuntimeError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@model_group.command("list")
def model_list_cmd() -> None:
    """List the models `stepdata model fetch` knows."""
    for name, source in MODELS.items():
        click.echo(f"{name:10s} {source.description}")


@main.command("generate")
@click.option("--backend", type=click.Choice(["auto", "vllm", "openai", "hf"]), default="auto", show_default=True)
@click.option("--model", required=True, help="Model folder (vllm, hf) or served model name (openai).")
@click.option("--base-url", help="OpenAI-compatible server URL (openai backend); the key comes from $OPENAI_API_KEY.")
@click.option("--question", help="A question, sent with the prompt template.")
@click.option("--prompt", "raw_prompt", help="A raw prompt, sent as is.")
@click.option("--template", default="step_by_step", show_default=True, help="Prompt template for --question.")
@click.option("--n", type=int, default=1, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def generate_cmd(backend: str, model: str, base_url: str | None, question: str | None, raw_prompt: str | None,
                 template: str, n: int, temperature: float, top_p: float, max_tokens: int, seed: int) -> None:
    """Sample completions for one question or prompt and print them as JSON (a smoke test for a backend)."""
    from stepdata.generation import GenerationRequest, SamplingConfig, make_generator

    if (question is None) == (raw_prompt is None):
        raise click.UsageError("give exactly one of --question and --prompt")
    try:
        sampling = SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    request = (GenerationRequest.chat("q", load_prompt(template).render(question=question)) if question is not None
               else GenerationRequest.raw("q", raw_prompt))
    options = {"base_url": base_url} if backend == "openai" and base_url else {}
    with make_generator(backend, model, **options) as generator:
        result = generator.generate([request], sampling)[0]
        stats = generator.last_stats
    click.echo(json.dumps({
        "prompt": result.prompt_text, "error": result.error,
        "completions": [{"text": c.text, "finish_reason": c.finish_reason, "tokens": c.completion_tokens}
                        for c in result.completions],
        "stats": stats.as_dict() if stats else None,
    }, indent=2, ensure_ascii=False))
    if result.error:
        raise SystemExit(1)


def _run_options(func):  # noqa: ANN001, ANN202 - click decorator stack shared by the stages
    options = [
        click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Output table (.parquet)."),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Units per resumable batch."),
        click.option("--shard", help="Process slice i of N (e.g. 0/4); join the shards with `stepdata merge`."),
        click.option("--overwrite", is_flag=True, help="Discard finished batches and start over."),
        click.option("--allow-config-change", is_flag=True, help="Keep batches made with another config."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _engine_options(func=None, *, required: bool = True):  # noqa: ANN001, ANN202
    if func is None:
        return lambda f: _engine_options(f, required=required)
    options = [
        click.option("--backend", type=click.Choice(["auto", "vllm", "openai", "hf"]), default="auto", show_default=True),
        click.option("--model", required=required, help="Model folder (vllm, hf) or served model name (openai)."),
        click.option("--base-url", help="OpenAI-compatible server (openai backend); key from $OPENAI_API_KEY."),
        click.option("--tokenizer", help="Local tokenizer for the openai backend's completions endpoint."),
        click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
                     help="Passed to the backend, e.g. --engine-option tensor_parallel_size=2 (JSON values)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _make_engine(backend: str, model: str, base_url: str | None, tokenizer: str | None, engine_options: tuple[str, ...]):
    from stepdata.generation import make_generator

    options: dict = {}
    for item in engine_options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--engine-option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if backend == "openai":
        options.update({k: v for k, v in (("base_url", base_url), ("tokenizer", tokenizer), ("endpoint", "completions" if tokenizer else "chat")) if v})
    return make_generator(backend, model, **options)


def _load_units(source: str, kind: str, data_dir: str | None):
    if source.endswith(".parquet") and Path(source).exists() and read_metadata(source).get("kind") == kind:
        return read_table(source, kind=kind)
    if kind == "problems":
        return load_problems(source, data_dir=data_dir)
    raise click.ClickException(f"{source} is not a {kind} table")


@main.command("sample")
@click.argument("problems")
@_engine_options
@_run_options
@click.option("--template", default="step_by_step", show_default=True, help="Prompt template (prompts/NAME.txt).")
@click.option("--n", type=int, default=4, show_default=True, help="Samples per problem.")
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, help="Use only the first N problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
def sample_cmd(problems: str, backend: str, model: str, base_url: str | None, tokenizer: str | None,
               engine_options: tuple[str, ...], out: str, batch_size: int, shard: str | None, overwrite: bool,
               allow_config_change: bool, template: str, n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int, limit: int | None, data_dir: str | None) -> None:
    """Stage 1: sample N step-by-step solutions per problem of PROBLEMS and check their answers."""
    from stepdata.pipeline import ConfigChanged, SampleConfig, SampleStage, StageRun, parse_shard

    try:
        units = _load_units(problems, "problems", data_dir)
        config = SampleConfig(template=template, n=n, temperature=temperature, top_p=top_p,
                              max_tokens=max_tokens, seed=seed)
        config.sampling()
        shard_pair = parse_shard(shard)
    except (ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    if limit is not None:
        units = units.head(limit)
    run_config = {"stage": "sample", "source": problems, "limit": limit, "backend": backend, "model": model,
                  **dataclasses.asdict(config)}
    run = StageRun("sample", out, "rollouts", run_config, key_column="problem_id", batch_size=batch_size,
                   shard=shard_pair, overwrite=overwrite, allow_config_change=allow_config_change)
    try:
        with _make_engine(backend, model, base_url, tokenizer, engine_options) as generator:
            stage = SampleStage(generator, config)
            run.run(units, stage, stage.stats, tokens_done=lambda: stage.totals["completion_tokens"])
    except ConfigChanged as exc:
        raise click.ClickException(str(exc)) from None
    summary = run.summary
    click.echo(f"wrote {summary.rows} rollouts ({summary.error_rows} with errors) to {summary.output}; "
               f"accuracy {summary.stage_stats.get('accuracy')}; summary in {summary.output}.summary.json")


@main.command("localize")
@click.argument("rollouts", type=click.Path(exists=True, dir_okay=False))
@_run_options
@_engine_options(required=False)
@click.option("--method", type=click.Choice(["rules", "judge", "rules+judge", "rollouts"]), default="rules",
              show_default=True,
              help="rules: exact checks of every step's arithmetic (no model); judge: an LLM judge with a majority "
                   "vote; rules+judge: the judge only where rules find nothing; rollouts: Monte-Carlo continuations "
                   "from each prefix with --model as the policy.")
@click.option("--rollouts", "rollouts_per_prefix", type=int, default=8, show_default=True,
              help="Continuations per probed prefix (rollouts method).")
@click.option("--search", type=click.Choice(["binary", "linear"]), default="binary", show_default=True,
              help="Prefix search of the rollouts method.")
@click.option("--problems", "problems_source", help="Problems table or data set (the judge needs the questions).")
@click.option("--protocol", type=click.Choice(["processbench", "stepdpo"]), default="processbench", show_default=True)
@click.option("--votes", type=int, default=5, show_default=True, help="Judge samples per solution (majority vote).")
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
def localize_cmd(rollouts: str, out: str, batch_size: int, shard: str | None, overwrite: bool,
                 allow_config_change: bool, backend: str, model: str | None, base_url: str | None,
                 tokenizer: str | None, engine_options: tuple[str, ...], method: str, problems_source: str | None,
                 protocol: str, votes: int, judge_max_tokens: int, data_dir: str | None, rollouts_per_prefix: int,
                 search: str) -> None:
    """Stage 2: find the first wrong step of every wrong rollout in ROLLOUTS."""
    import contextlib

    from stepdata.localize.judge import JudgeLocalizer
    from stepdata.pipeline import ConfigChanged, StageRun, parse_shard
    from stepdata.pipeline.localize import LocalizeStage, wrong_rollouts

    from stepdata.localize.rollouts import RolloutLocalizer

    needs_judge = "judge" in method
    needs_model = needs_judge or method == "rollouts"
    if needs_model and (model is None or problems_source is None):
        raise click.UsageError(f"--method {method} needs --model and --problems (the questions and answers)")
    try:
        table = read_table(rollouts, kind="rollouts")
        shard_pair = parse_shard(shard)
        problems = _load_units(problems_source, "problems", data_dir) if problems_source else None
    except (SchemaError, ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    units, left_out = wrong_rollouts(table)
    config = {"stage": "localize", "source": rollouts, "method": method}
    if needs_judge:
        config |= {"judge_model": model, "backend": backend, "protocol": protocol, "votes": votes,
                   "judge_max_tokens": judge_max_tokens}
    if method == "rollouts":
        config |= {"policy": model, "backend": backend, "rollouts": rollouts_per_prefix, "search": search}
    run = StageRun("localize", out, "localized", config, key_column="rollout_id", batch_size=batch_size,
                   shard=shard_pair, overwrite=overwrite, allow_config_change=allow_config_change)
    engine = _make_engine(backend, model, base_url, tokenizer, engine_options) if needs_model else contextlib.nullcontext()
    try:
        with engine as generator:
            judge = JudgeLocalizer(generator, protocol, votes=votes, max_tokens=judge_max_tokens) if needs_judge else None
            mc = RolloutLocalizer(generator, rollouts=rollouts_per_prefix, search=search) if method == "rollouts" else None
            stage = LocalizeStage(method, judge=judge, problems=problems, rollouts=mc)
            run.run(units, stage, lambda df: stage.stats(df) | {"left_out": left_out})
    except (ConfigChanged, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    stats = run.summary.stage_stats
    click.echo(f"localized {stats['localized']} of {run.summary.rows} wrong rollouts ({stats['unknown']} unknown); "
               f"not localized: {left_out['correct']} correct, {left_out['unjudged_or_failed']} unjudged or failed; "
               f"wrote {run.summary.output}")


@main.group("bench")
def bench_group() -> None:
    """Measure localizers on labelled data."""


@bench_group.command("processbench")
@_engine_options(required=False)
@click.option("--localizer", type=click.Choice(["rules", "judge", "rules+judge"]), default="rules", show_default=True)
@click.option("--protocol", type=click.Choice(["processbench", "stepdpo"]), default="processbench", show_default=True)
@click.option("--votes", type=int, default=5, show_default=True)
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--subset", "subsets", multiple=True, type=click.Choice(["gsm8k", "math"]), default=("gsm8k", "math"),
              show_default=True)
@click.option("--limit", type=int, help="Score only the first N samples of each subset.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results and predictions here.")
def bench_processbench_cmd(backend: str, model: str | None, base_url: str | None, tokenizer: str | None,
                           engine_options: tuple[str, ...], localizer: str, protocol: str, votes: int,
                           judge_max_tokens: int, subsets: tuple[str, ...], limit: int | None, data_dir: str | None,
                           json_out: str | None) -> None:
    """Score a localizer in ProcessBench's protocol (accuracy on erroneous / correct samples, F1, cost)."""
    import contextlib

    from stepdata.bench.processbench import HEADER, judge_localizer, rules_localizer, run_processbench
    from stepdata.localize.judge import JudgeLocalizer

    if "judge" in localizer and model is None:
        raise click.UsageError(f"--localizer {localizer} needs --model (the judge)")
    engine = (_make_engine(backend, model, base_url, tokenizer, engine_options) if "judge" in localizer
              else contextlib.nullcontext())
    report = []
    with engine as generator:
        chosen = rules_localizer
        if generator is not None:
            judge = JudgeLocalizer(generator, protocol, votes=votes, max_tokens=judge_max_tokens)
            chosen = judge_localizer(judge, fallback_rules=localizer == "rules+judge")
        lines = []
        for subset in subsets:
            predictions: list[dict] = []
            try:
                result = run_processbench(subset, chosen, data_dir=data_dir, limit=limit, predictions=predictions)
            except (FileNotFoundError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            lines.append(result.row())
            report.append(result.__dict__ | {"predictions": predictions})
    click.echo(f"localizer: {localizer}" + (f" (judge {model}, {protocol} protocol, {votes} votes)" if model and "judge" in localizer else ""))
    click.echo(HEADER)
    for line in lines:
        click.echo(line)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=1))


@main.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
def merge_cmd(shards: tuple[str, ...], out: str) -> None:
    """Join the shard outputs of one stage (same config) into one table."""
    from stepdata.pipeline import merge_outputs

    try:
        merged = merge_outputs(list(shards), out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"merged {len(shards)} shard(s), {len(merged)} rows, into {out}")


@main.command("datasets")
def datasets_cmd() -> None:
    """List the data set names load_problems understands."""
    for name, (relative, fmt, _source) in KNOWN_SETS.items():
        click.echo(f"{name:20s} {fmt:13s} <data-dir>/{relative}")
    click.echo(f"{'embedded[:N]':20s} {'generated':13s} (built in, no files)")


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    main()
