"""One interface for every first-error localizer: what it sees, what it answers, how it is found by name.

A localizer is anything with a ``name`` and a batched ``locate(solutions)``
(:class:`Localizer`). It sees a :class:`Solution` (the steps, plus whatever the
problem gives: question, gold answer, reference, meta) and answers a
:class:`Localization` per solution: the first wrong step, a status from
:data:`stepdata.schema.LOCALIZE_STATUSES`, its evidence and what it cost. The
localize stage, the ProcessBench harness and :class:`Fallback` speak only this
interface, so a new localizer is one class plus a registry entry:

    @register_localizer("oops")
    def make_oops() -> Localizer:
        return OopsLocalizer()

and then ``make_localizer("oops")``, ``stepdata localize --method oops --plugin
my_module`` and ``stepdata bench processbench --localizer oops --plugin
my_module`` all use it. Options are passed by name; the CLI offers its options
under their own names (``rules_tolerance``, ``votes``, ``judge_temperature``,
``generator`` for the model it loaded, ...) and each factory takes the ones its
signature names (:func:`options_for`).

Batched because model-based localizers ask one ``generate`` call per round for
every solution at once; a localizer must return exactly one answer per solution,
in order (:func:`locate_checked` enforces it for every caller).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar, runtime_checkable

from stepdata.schema import LOCALIZE_STATUSES


@dataclass(frozen=True)
class Solution:
    """What a localizer sees about one solution.

    ``finished`` is False when the text was cut at max_tokens (its missing steps were
    never written, so "no error found" in it is not "no error"). ``answer_correct`` is
    what is known about its final answer (False for a rollout checked wrong, None when
    not known, as on ProcessBench): a localizer that only sees part of the errors (the
    rules) must not call a solution with a known-wrong answer error-free.
    """

    solution_id: str
    problem_id: str
    question: str | None
    steps: Sequence[str]
    answer: str | None = None  # the gold answer
    reference: str | None = None  # a reference solution's text
    meta: str | dict | None = None  # the problem's meta (embedded problems: the gold steps)
    finished: bool = True
    answer_correct: bool | None = None


@dataclass
class Localization:
    """One localizer's answer for one solution.

    ``error_step`` is 0-based when ``status`` is "error", -1 for "no_error", None for
    "unknown" (the method could not tell) and "unfinished" (no error in a solution that
    stops early or was cut). ``evidence`` is JSON-able (the false claim, the votes and
    raw replies, the MC values); a ``votes`` list in it fills the table's votes column.
    ``note`` is a one-line reading of the evidence when the method writes one; ``error``
    is a failure to retry on resume ("judge: HTTP 500", "answer_check: timeout").
    """

    error_step: int | None
    status: str
    confidence: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    calls: int = 0
    tokens: int = 0
    error: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        # a status that disagrees with error_step would be written to the table unnoticed
        if self.status not in LOCALIZE_STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {list(LOCALIZE_STATUSES)}")
        step = self.error_step
        agrees = {"error": step is not None and step >= 0, "no_error": step == -1}.get(self.status, step is None)
        if not agrees:
            expected = {"error": "an index >= 0", "no_error": "-1"}.get(self.status, "None")
            raise ValueError(f"status {self.status!r} needs error_step {expected}, got {step!r}")

    @property
    def rationale(self) -> str:
        """The text for the localized table's ``rationale`` column: the note, else the evidence as JSON."""
        return self.note if self.note is not None else json.dumps(self.evidence, ensure_ascii=False)

    @property
    def votes(self) -> list[int] | None:
        """The votes behind the answer, when the method voted (the table's ``votes`` column)."""
        return self.evidence.get("votes")


def status_for(error_step: int | None, finished: bool = True) -> tuple[int | None, str]:
    """(error_step, status) for a method that answers an index, -1 or None: "no error" in a cut solution is unfinished."""
    if error_step is None:
        return None, "unknown"
    if error_step == -1:
        return (None, "unfinished") if not finished else (-1, "no_error")
    return error_step, "error"


def first_below(scores: Sequence[float], threshold: float) -> int:
    """The threshold rule of a score-based localizer (a PRM): the first step scoring below ``threshold``, -1 when
    none does. One definition, so ProcessBench's threshold sweep re-applies exactly the rule the localizer ran."""
    return next((i for i, score in enumerate(scores) if score < threshold), -1)


@runtime_checkable
class Localizer(Protocol):
    """Finds the first wrong step of many solutions at once.

    A localizer may also say which problem fields of a :class:`Solution` it reads
    ("question", "answer", "reference", "meta") with a ``needs`` attribute; callers
    that cannot fill them refuse before any work is done.

    Two more optional methods serve a localizer that answers from a file made for one
    input (the human localizer's labels), when it is built without a model: the localize
    stage calls ``check_input(solutions)`` with all of its units before any batch (to
    refuse a file made for another table), and adds ``report(localized)``, a JSON-able
    dict, to its summary under ``labels``.
    """

    name: str

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        """One :class:`Localization` per solution, in order."""
        ...


def needs_of(localizer: Localizer) -> frozenset[str]:
    """The problem fields ``localizer`` reads (its optional ``needs`` attribute)."""
    return frozenset(getattr(localizer, "needs", ()))


def locate_checked(localizer: Localizer, solutions: Sequence[Solution]) -> list[Localization]:
    """``localizer.locate(solutions)``, refusing an answer that does not pair one result with each solution."""
    if not solutions:
        return []
    results = list(localizer.locate(solutions))
    if len(results) != len(solutions) or not all(isinstance(r, Localization) for r in results):
        raise ValueError(f"localizer {localizer.name!r} must return one Localization per solution: "
                         f"got {len(results)} results for {len(solutions)} solutions")
    return results


class Fallback:
    """Ask ``first``; the solutions where it located no error go to ``then`` in one batch.

    ``when`` is the set of ``first``'s statuses that are passed on (by default "no_error"
    and "unknown": "error" is an answer, and "unfinished" from an exact method means every
    step it has is right). Each row records the method of whichever localizer answered;
    a passed-on row's cost is both localizers' cost, and a failure of either is kept (to
    be retried on resume).
    """

    def __init__(self, first: Localizer, then: Localizer, *, when: Collection[str] = ("no_error", "unknown")) -> None:
        unknown = set(when) - set(LOCALIZE_STATUSES)
        if unknown:
            raise ValueError(f"Fallback when= has unknown statuses {sorted(unknown)}; expected {list(LOCALIZE_STATUSES)}")
        self.first, self.then, self.when = first, then, frozenset(when)
        self.name = f"{first.name}+{then.name}"
        self.needs = needs_of(first) | needs_of(then)

    def locate(self, solutions: Sequence[Solution]) -> list[Localization]:
        results = locate_checked(self.first, solutions)
        passed_on = [i for i, result in enumerate(results) if result.status in self.when]
        answers = locate_checked(self.then, [solutions[i] for i in passed_on])
        for i, answer in zip(passed_on, answers):
            before = results[i]
            results[i] = dataclasses.replace(answer, calls=before.calls + answer.calls,
                                             tokens=before.tokens + answer.tokens, error=answer.error or before.error)
        return results


# -- the registry: localizers by name ---------------------------------------------------------------

LocalizerFactory = Callable[..., Localizer]
F = TypeVar("F", bound=LocalizerFactory)
_FACTORIES: dict[str, LocalizerFactory] = {}


def register_localizer(name: str) -> Callable[[F], F]:
    """Decorator: register ``factory(**options) -> Localizer`` under ``name`` (a class works too).

    A name is registered once; :func:`unregister_localizer` frees it (tests, reloads).
    """

    def decorate(factory: F) -> F:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"a localizer named {name!r} is already registered ({_FACTORIES[name]!r})")
        _FACTORIES[name] = factory
        return factory

    return decorate


def unregister_localizer(name: str) -> None:
    """Forget the localizer registered as ``name`` (no error when there is none)."""
    _FACTORIES.pop(name, None)


def available_localizers() -> list[str]:
    """The registered names, sorted (the built-ins register when :mod:`stepdata.localize` is imported)."""
    return sorted(_FACTORIES)


def _factory(name: str) -> LocalizerFactory:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown localizer {name!r}; available: {available_localizers()} "
                         "(a plugin module registers more: --plugin MODULE)") from None


def _signature(name: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """(options taken, options required, takes any option) of ``name``'s factory."""
    taken, required, any_option = set(), set(), False
    for parameter in inspect.signature(_factory(name)).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            any_option = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            taken.add(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.add(parameter.name)
    return frozenset(taken), frozenset(required), any_option


def required_options(name: str) -> frozenset[str]:
    """The options ``name``'s factory cannot do without (e.g. ``generator`` for a model-based one)."""
    return _signature(name)[1]


def options_for(name: str, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The options in ``offered`` that ``name``'s factory takes (so one set of CLI options serves every localizer)."""
    taken, _, any_option = _signature(name)
    return {key: value for key, value in offered.items() if any_option or key in taken}


def check_options(name: str, options: Collection[str], provided: Collection[str] = ()) -> None:
    """Refuse what :func:`make_localizer` would refuse about option names, building nothing: an unknown
    localizer, an option its factory does not take, a required one missing (``provided``: the options the
    caller adds itself when it builds, e.g. ``generator``). Lets a setting be checked when a config is made,
    long before a model-based localizer can be built."""
    taken, required, any_option = _signature(name)
    unknown = set() if any_option else set(options) - taken
    if unknown:
        raise ValueError(f"localizer {name!r} does not take option(s) {sorted(unknown)}; it takes {sorted(taken)}")
    missing = required - set(options) - set(provided)
    if missing:
        raise ValueError(f"localizer {name!r} needs option(s) {sorted(missing)}")


def make_localizer(name: str, **options: Any) -> Localizer:
    """Build the localizer registered as ``name``; an unknown name, option or missing option is a clear error."""
    check_options(name, options)
    localizer = _FACTORIES[name](**options)
    if not isinstance(localizer, Localizer):
        raise TypeError(f"the factory of localizer {name!r} returned {type(localizer).__name__}, "
                        "which has no name and locate(solutions)")
    return localizer


def load_plugin(spec: str) -> ModuleType:
    """Import a module that registers localizers: a dotted module path or a ``.py`` file.

    A file is imported once per process under a name derived from its path, so
    loading it again does not register its localizers twice.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"plugin file {spec} does not exist")
        resolved = path.resolve()
        name = f"stepdata_plugin_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, resolved)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import plugin file {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import plugin module {spec!r}: {exc}") from None
