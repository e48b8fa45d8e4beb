"""Options and helpers several subcommands share, so an option has one name, one help and one parser.

Everything here turns a user's mistake into a click error (a usage message, exit status 2, or a
one-line ``Error:``), never a traceback. Heavy imports (engines, pyarrow, transformers) stay inside
the functions: ``stepdata --help`` must not load them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from stepdata.generation.engine_config import EngineConfig
from stepdata.io import read_metadata, read_table
from stepdata.keyvalues import KeyValueError, parse_key_values
from stepdata.loaders import load_problems

if TYPE_CHECKING:
    import pandas as pd

    from stepdata.generation import Generator

F = TypeVar("F", bound=Callable[..., Any])

ENGINE_OPTION_HELP = "Passed to the backend, e.g. --engine-option tensor_parallel_size=2 (JSON values)."


def read_text_arg(text: str) -> str:
    """A TEXT argument, where ``-`` means standard input (so long solutions can be piped in)."""
    return sys.stdin.read() if text == "-" else text


def key_values(items: Iterable[str], *, param_hint: str, metavar: str = "KEY=VALUE",
               json_values: bool = True) -> dict[str, Any]:
    """``KEY=VALUE`` items of option ``param_hint`` through the one parser (stepdata.keyvalues).

    Parsed item by item so the usage error names the item that is wrong, as ``'x' is not METAVAR``.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        try:
            parsed.update(parse_key_values([item], option=param_hint, json_values=json_values))
        except KeyValueError:
            raise click.BadParameter(f"{item!r} is not {metavar}", param_hint=param_hint) from None
    return parsed


def column_mapping(items: Iterable[str], param_hint: str = "--column") -> dict[str, str]:
    """``--column OURS=THEIRS`` items as a column mapping; column names are kept as written (no JSON),
    and both sides must be given (``question=`` maps to no column)."""
    mapping: dict[str, str] = {}
    for item in items:
        pair = key_values([item], param_hint=param_hint, metavar="OURS=THEIRS", json_values=False)
        if "" in pair.values():
            raise click.BadParameter(f"{item!r} is not OURS=THEIRS", param_hint=param_hint)
        mapping.update(pair)
    return mapping


def engine_option(help: str = ENGINE_OPTION_HELP) -> Callable[[F], F]:
    """``--engine-option KEY=VALUE`` (repeatable): one name and metavar wherever an engine is built,
    with help naming the options that matter to the command."""
    return click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE", help=help)


def engine_options(func: F | None = None, *, required: bool = True, many: bool = False) -> Any:
    """--backend, --model, --base-url, --tokenizer and --engine-option, for every command that builds an engine.

    Used bare (``@engine_options``) or with arguments: ``required=False`` where a model is needed only
    by some methods, ``many=True`` for a repeatable ``--model`` (passed as ``models``).
    """
    if func is None:
        return lambda f: engine_options(f, required=required, many=many)
    options = [
        click.option("--backend", type=click.Choice(["auto", "vllm", "openai", "hf"]), default="auto", show_default=True),
        click.option("--model", "models" if many else "model", multiple=many, required=required,
                     help="Model folder (vllm, hf) or served model name (openai)." + (" Repeat to compare." if many else "")),
        click.option("--base-url", help="OpenAI-compatible server (openai backend); key from $OPENAI_API_KEY."),
        click.option("--tokenizer", help="Local tokenizer for the openai backend's completions endpoint."),
        engine_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def engine_kwargs(engine_options: Iterable[str]) -> dict[str, Any]:
    """``--engine-option KEY=VALUE`` items as keyword arguments (values read as JSON where they parse)."""
    return key_values(engine_options, param_hint="--engine-option")


def engine_config(backend: str, model: str | None, base_url: str | None = None, tokenizer: str | None = None,
                  engine_options: tuple[str, ...] = ()) -> EngineConfig:
    """The engine options as an :class:`EngineConfig` (the one place an engine is described and built)."""
    engine_kwargs(engine_options)  # a bad item is a usage error naming --engine-option
    return EngineConfig(backend=backend, model=model, base_url=base_url, tokenizer=tokenizer,
                        engine_options=tuple(engine_options))


def engine_description(backend: str, model: str, engine_options: tuple[str, ...]) -> dict[str, Any]:
    """Backend, model and dtype of the engine, worked out without loading it (see EngineConfig.describe)."""
    try:
        return engine_config(backend, model, engine_options=engine_options).describe()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine-option") from None


def make_engine(backend: str, model: str, base_url: str | None, tokenizer: str | None,
                engine_options: tuple[str, ...]) -> Generator:
    """Build the engine the engine options describe (EngineConfig.build: the openai backend also gets the
    server, and the completions endpoint when a local tokenizer renders the prompts)."""
    return engine_config(backend, model, base_url, tokenizer, engine_options).build()


def load_units(source: str, kind: str, data_dir: str | None) -> pd.DataFrame:
    """A stepdata table of ``kind``; for problems also any problems file or data set name."""
    if source.endswith(".parquet") and Path(source).exists() and read_metadata(source).get("kind") == kind:
        return read_table(source, kind=kind)
    if kind == "problems":
        return load_problems(source, data_dir=data_dir)
    raise click.ClickException(f"{source} is not a {kind} table")


def problem_steps_options(func: F) -> F:
    """How many steps an embedded problem has. Named ``--*-problem-steps`` because ``--max-steps`` is
    train's (TRL's) optimizer steps: one option name, one meaning across commands."""
    func = click.option("--max-problem-steps", "max_steps", type=click.IntRange(2, 6), default=6, show_default=True,
                        help="Most steps of an embedded problem.")(func)
    return click.option("--min-problem-steps", "min_steps", type=click.IntRange(2, 6), default=2, show_default=True,
                        help="Fewest steps of an embedded problem.")(func)


class LocalizerName(click.ParamType):
    """A registered localizer's name, checked when parsed: after the eager --plugin modules registered theirs."""

    name = "localizer"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from stepdata.localize import available_localizers

        return "[" + "|".join(available_localizers()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from stepdata.localize import available_localizers

        if value not in available_localizers():
            self.fail(f"{value!r} is not a registered localizer; available: {', '.join(available_localizers())} "
                      "(--plugin MODULE registers more)", param, ctx)
        return value


class VerifierName(LocalizerName):
    """``--verify``: auto, none or a registered localizer's name (mark and drop, the old spellings, are read
    by the Config as auto with that action)."""

    name = "verifier"
    SPECIAL = ("auto", "none")
    LEGACY = ("mark", "drop")

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from stepdata.localize import available_localizers

        return "[" + "|".join([*self.SPECIAL, *available_localizers()]) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in self.SPECIAL or value in self.LEGACY:
            return value
        return super().convert(value, param, ctx)


def _load_plugins(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    from stepdata.localize import load_plugin

    for spec in specs:
        try:
            load_plugin(spec)
        except (ValueError, ImportError) as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return specs


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, is_eager=True, callback=_load_plugins, metavar="MODULE",
    help="Import MODULE first (a dotted module path or a .py file): it may register more localizers. Repeatable.")


def load_tokenizer(model: str) -> Any:
    """The tokenizer of model folder ``model``, or a click error saying what is missing."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise click.ClickException("--model needs transformers (install the hf extra)") from None
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load a tokenizer from {model}: {exc}") from None


def read_pairs(path: str) -> pd.DataFrame:
    """A pairs table or a pairs export for export/stats (one reader: stepdata.pairs.export.read_pairs)."""
    from stepdata.pairs.export import read_pairs as read_pairs_file

    try:
        df = read_pairs_file(path, ignore_unknown_columns=True)
    except (ValueError, OSError) as exc:  # SchemaError, ExportError, ArrowInvalid, a missing file
        raise click.ClickException(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    if df.attrs.get("ignored_columns"):
        click.echo(f"{path}: ignoring column(s) that are not pairs columns: {df.attrs['ignored_columns']}", err=True)
    return df
