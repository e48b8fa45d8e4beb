"""Settings declared once: a dataclass field with its default and its help.

Every stage's ``Config`` (and the engine's, and the executor's) declares its fields
with :func:`setting`, so the default and the sentence a user reads in ``--help`` sit
next to each other in one place. The command line builds its options from these
fields (:mod:`stepdata.commands.config_options`) and a recipe's ``config:`` mapping
is checked against them (:func:`config_from_mapping`), so neither repeats a default.

A setting may also say what values make sense (``minimum``/``maximum``, open or
closed, and ``choices``): a Config's ``__post_init__`` calls :func:`check_settings`,
so a count of 0 where none makes sense, a probability outside its range or a
negative temperature is refused when the Config is made, from Python, a recipe or
the command line, with a :class:`SettingError` naming the setting (the command line
turns it into a usage error naming the option; its options carry the range too).

A setting added after runs were recorded without it can be declared ``omit_default=True``:
it is left out of the recorded config (:func:`recorded_config`) while it has its default, so a
run made before it existed still resumes, and a run that sets it is a different config.

A setting that is a mapping of options for something pluggable (a verifier's options) is
declared with default ``()`` and ``multiple=True``: the command line gives repeated
``KEY=VALUE`` items, a recipe a mapping, and the Config turns either into a dict with
:func:`options_mapping` (values on the command line read as YAML scalars).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class SettingError(ValueError):
    """A setting holds a value it may not have; ``name`` is the setting's field name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


def setting(default: Any, help: str, *, cli: str | None = None, choices: Sequence[str] | None = None,
            multiple: bool = False, metavar: str | None = None, hidden: bool = False,
            minimum: float | None = None, maximum: float | None = None, min_open: bool = False,
            max_open: bool = False, omit_default: bool = False) -> Any:
    """A dataclass field whose metadata carries what the command line needs and what values make sense.

    ``cli`` overrides the option name (``--rollouts`` for ``rollouts_per_prefix``);
    ``choices`` limits a string; ``multiple`` makes a repeatable option (a tuple);
    ``hidden`` keeps a library-only field off the command line. ``minimum``/``maximum``
    bound a number (every item of a tuple of numbers), excluded with ``min_open``/``max_open``;
    None (an unset optional setting) is always allowed. ``omit_default``: recorded only when it differs from
    its default (module doc).
    """
    metadata = {"help": help, "cli": cli, "choices": tuple(choices) if choices else None, "multiple": multiple,
                "metavar": metavar, "hidden": hidden, "minimum": minimum, "maximum": maximum,
                "min_open": min_open, "max_open": max_open, "omit_default": omit_default}
    return dataclasses.field(default=default, metadata=metadata)


def recorded_config(config: Any) -> dict[str, Any]:
    """Dataclass ``config`` as a run records it: every field, except an ``omit_default`` one at its default."""
    values = dataclasses.asdict(config)
    for field in dataclasses.fields(config):
        if field.metadata.get("omit_default") and values.get(field.name) == field.default:
            del values[field.name]
    return values


def describe_range(metadata: Mapping[str, Any]) -> str | None:
    """``">= 1"``, ``"> 0"``, ``"in (0, 1]"``: what a setting's bounds allow (None: unbounded)."""
    low, high = metadata.get("minimum"), metadata.get("maximum")
    if low is None and high is None:
        return None
    if low is not None and high is not None:
        return f"in {'(' if metadata.get('min_open') else '['}{low}, {high}{')' if metadata.get('max_open') else ']'}"
    if low is not None:
        return f"{'>' if metadata.get('min_open') else '>='} {low}"
    return f"{'<' if metadata.get('max_open') else '<='} {high}"


def _in_range(value: float, metadata: Mapping[str, Any]) -> bool:
    low, high = metadata.get("minimum"), metadata.get("maximum")
    if low is not None and (value <= low if metadata.get("min_open") else value < low):
        return False
    return not (high is not None and (value >= high if metadata.get("max_open") else value > high))


def check_settings(config: Any) -> None:
    """Raise :class:`SettingError` naming the first field of dataclass ``config`` outside its choices or range."""
    for field in dataclasses.fields(config):
        value, metadata = getattr(config, field.name), field.metadata
        if value is None:
            continue
        choices = metadata.get("choices")
        if choices and not metadata.get("multiple") and value not in choices:
            raise SettingError(field.name, f"{field.name} must be one of {list(choices)}, got {value!r}")
        allowed = describe_range(metadata)
        if allowed is None:
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not _in_range(item, metadata):
                raise SettingError(field.name, f"{field.name} must be {allowed}, got {value!r}")


def _scalar(text: str) -> Any:
    """A command-line value as a YAML scalar (``3`` an int, ``0.5`` a float, ``true`` a bool, ``null`` None);
    anything that is not a scalar in YAML (``[1, 2]``, ``a: b``) stays the text it is."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is None or isinstance(value, (str, bool, int, float)) else text


def options_mapping(value: Mapping[str, Any] | Iterable[str] | None, name: str) -> dict[str, Any]:
    """A mapping setting as a plain dict: a mapping (a recipe's, kept as YAML typed it) or ``KEY=VALUE`` items
    (the command line's, each value read as a YAML scalar; a single item may come as one string). Raises :class:`SettingError` naming ``name``."""
    if value is None:
        return {}
    if isinstance(value, str) and "=" in value:  # one item (`--set options=key=value`)
        value = [value]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SettingError(name, f"{name} must be a mapping or KEY=VALUE items, got {value!r}")
    else:
        items = []
        for item in value:
            key, sep, text = str(item).partition("=")
            if not sep:
                raise SettingError(name, f"{name}: {item!r} is not KEY=VALUE")
            items.append((key.strip(), _scalar(text.strip())))
    for key, _ in items:
        if not isinstance(key, str) or not key.isidentifier():
            raise SettingError(name, f"{name}: {key!r} is not an option name")
    return dict(items)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of dataclass ``cls`` (``from __future__`` makes them strings)."""
    return typing.get_type_hints(cls)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (from YAML or JSON) as the field's type: ints where an int is wanted, tuples for tuples."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return coerce(value, args[0], where)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = [items]  # one number for a list of numbers (`--set seeds=0` reads 0 as a number)
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else str
        return tuple(coerce(v, inner, where) for v in items)
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ValueError(f"{where}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on"):
            return True
        if str(value).lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{where}: {value!r} is not true or false")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != number:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        return str(value)
    return value


def config_from_mapping(cls: type, values: Mapping[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping (a recipe's ``config:``), naming any unknown or ill-typed key."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    types = field_types(cls)
    try:
        return cls(**{k: coerce(v, types[k], f"{where}.{k}") for k, v in values.items()})
    except SettingError as exc:
        raise SettingError(exc.name, f"{where}.{exc.name}: {exc}") from None
