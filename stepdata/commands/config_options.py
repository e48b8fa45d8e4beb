"""Command-line options generated from Config dataclasses, so a default and its help live in one place.

``@config_options(SampleConfig)`` adds ``--n``, ``--temperature``, ... with the
field's default (shown in ``--help``), its help text, a Choice for a field with
``choices`` (or a ``Literal``), a flag for a bool, a repeatable option for a
``multiple`` field and a comma-separated list for a tuple of numbers.
:func:`build_config` turns the parsed values back into the dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click

from stepdata.settings import SettingError, coerce, field_types


class _CommaList(click.ParamType):
    """'1.1,1.2,1.3' -> a tuple of the field's item type."""

    name = "list"

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return coerce(value, self.annotation, param.name if param else "value")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _base(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return args[0]
    return annotation


def option_name(field: dataclasses.Field) -> str:
    return field.metadata.get("cli") or "--" + field.name.replace("_", "-")


def _option_for(field: dataclasses.Field, annotation: Any, default: Any, help_text: str | None = None,
                kind: click.ParamType | None = None) -> Callable:
    meta = dict(field.metadata) | ({"help": help_text} if help_text else {})
    base = _base(annotation)
    kwargs: dict[str, Any] = {"help": meta.get("help"), "show_default": default not in (None, (), "")}
    if kind is not None:  # a value the command checks itself (a name in a registry that plugins extend)
        return click.option(option_name(field), field.name, type=kind, default=default, **kwargs)
    if meta.get("multiple"):
        return click.option(option_name(field), field.name, multiple=True, metavar=meta.get("metavar"),
                            help=meta.get("help"), default=default)
    if base is bool:
        if default:
            flag = option_name(field)
            return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=True, **kwargs)
        return click.option(option_name(field), field.name, is_flag=True, default=False, help=meta.get("help"))
    choices = meta.get("choices") or (typing.get_args(base) if typing.get_origin(base) is typing.Literal else None)
    if choices:
        kind: Any = click.Choice(list(choices))
    elif typing.get_origin(base) is tuple:
        kind = _CommaList(base)
        kwargs["show_default"] = False
    elif base in (int, float) and (meta.get("minimum") is not None or meta.get("maximum") is not None):
        kind = (click.IntRange if base is int else click.FloatRange)(
            meta.get("minimum"), meta.get("maximum"), min_open=bool(meta.get("min_open")),
            max_open=bool(meta.get("max_open")))
    else:
        kind = base if base in (int, float, str) else str
    return click.option(option_name(field), field.name, type=kind, default=default, metavar=meta.get("metavar"),
                        **kwargs)


def config_options(cls: type, *, exclude: Iterable[str] = (), defaults: dict[str, Any] | None = None,
                   help: dict[str, str] | None = None, kinds: dict[str, click.ParamType] | None = None) -> Callable:
    """A decorator adding one option per field of dataclass ``cls`` (hidden fields and ``exclude`` left out).

    ``defaults`` changes a field's command-line default where the command's use differs
    (eval is greedy); ``help`` replaces a field's help for this command; ``kinds`` gives a
    field's option a click type of the command's (``--verify``: a registered localizer).
    """
    excluded = set(exclude)
    types = field_types(cls)

    own = set(vars(cls).get("__annotations__", {}))
    # a Config's own settings first, then those it inherits (a shared block of settings, e.g. the verifier's)
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)

    def decorate(func: Callable) -> Callable:
        for field in reversed(fields):
            if field.name in excluded or field.metadata.get("hidden") or "help" not in field.metadata:
                continue
            default = (defaults or {}).get(field.name, field.default)
            func = _option_for(field, types[field.name], default, (help or {}).get(field.name),
                               (kinds or {}).get(field.name))(func)
        return func

    return decorate


def build_config(cls: type, values: dict[str, Any], **fixed: Any) -> Any:
    """The dataclass ``cls`` from the parsed options in ``values`` (keys that are not its fields are ignored).

    A setting the Config refuses is a usage error naming its option (``Invalid value for '--rounds': ...``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    chosen = {k: v for k, v in values.items() if k in fields} | fixed
    try:
        return cls(**chosen)
    except SettingError as exc:
        field = fields.get(exc.name)
        raise click.BadParameter(str(exc), param_hint=option_name(field) if field else None) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
