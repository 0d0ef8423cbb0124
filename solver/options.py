"""What an option of a run is: its flag, help, type, bounds, and where it is shown.

Each field of :class:`solver.config.RunConfig` carries one :class:`Option` as dataclass field
metadata (declared with :func:`option`); :func:`resolve_options` adds the field's name, type and
default. Everything else is derived from that one declaration: ``RunConfig.validate`` (choices
and bounds), ``duogpt prune`` and ``duogpt eval`` (``duogpt_tui.cli_options``), the arguments of
``duogpt-tui`` and the setup form (``screens.setup_fields``). Adding an option is one edit: a
field with its :func:`option`.

Where an option is shown (:attr:`Option.surfaces`) follows from what it declares: every option
is on ``duogpt prune`` and ``duogpt-tui``; it is on ``duogpt eval`` when it has ``eval_help`` and
on the setup form when it has a :class:`FormField`.

Pure Python: no torch, and no UI library (the solver never imports typer, textual or rich).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from solver.errors import InputError

OPTION_KEY = "option"
"""The key of a field's :class:`Option` in its dataclass metadata."""

T = TypeVar("T")


class Surface(StrEnum):
    """Where options are shown."""

    PRUNE = "duogpt prune"
    EVAL = "duogpt eval"
    TUI = "duogpt-tui"
    SETUP = "setup form"


@dataclass(frozen=True)
class Bounds:
    """The range a number must lie in (``None``: unbounded on that side).

    Attributes:
        low: the lower bound.
        high: the upper bound.
        low_open: ``low`` itself is excluded.
        high_open: ``high`` itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = True

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)`` or ``<= 4``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            f"{')' if self.high_open else ']'}"
        )


@dataclass(frozen=True)
class FormField:
    """How an option appears on the setup form.

    Attributes:
        row: the rows are sorted by this number (then by field order).
        label: the row's label.
        placeholder: what an empty text field shows.
        choice_labels: what the list shows for each of the option's choices (same order).
        suggestions: completions offered while typing.
        picker: ``models``, ``texts`` or ``devices``: the list offers what the machine has.
        toggle: a checkbox switches the option between 0 (off) and a number, this one at first.
        unit: a word shown after the field (``blocks``).
        hint: a muted line shown next to a valid value.
    """

    row: int
    label: str
    placeholder: str = ""
    choice_labels: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()
    picker: str = ""
    toggle: int = 0
    unit: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Option:
    """One option of a run, declared once (see the module text).

    Attributes:
        help: what it does, for ``--help`` (``{choices}`` is replaced by the choices).
        group: the help panel it is listed under.
        flag: the command-line flag (default ``--field-name``).
        off_flag: a boolean's negative flag (default ``--no-field-name``).
        choices: the values allowed (checked unless ``check`` is given).
        bounds: the range a number must lie in.
        check: a validator used instead of the choices check; raises :class:`InputError`.
        noun: what an unknown value is called (``unknown activation rule 'x'``).
        eval_help: the help on ``duogpt eval``; empty when ``duogpt eval`` has no such option.
        form: how it appears on the setup form; None when it is not on the form.
        name: the field's name (set by :func:`resolve_options`).
        type: the field's type: ``str``, ``int``, ``float`` or ``bool`` (idem).
        default: the field's default (idem).
    """

    help: str
    group: str
    flag: str = ""
    off_flag: str = ""
    choices: tuple[str, ...] = ()
    bounds: Bounds | None = None
    check: Callable[[Any], object] | None = None
    noun: str = ""
    eval_help: str = ""
    form: FormField | None = None
    name: str = ""
    type: type = str
    default: Any = None

    @property
    def surfaces(self) -> frozenset[Surface]:
        """Where the option is shown (see the module text)."""
        shown = {Surface.PRUNE, Surface.TUI}
        if self.eval_help:
            shown.add(Surface.EVAL)
        if self.form is not None:
            shown.add(Surface.SETUP)
        return frozenset(shown)

    def help_on(self, surface: Surface) -> str:
        """The help text on ``surface``."""
        text = self.eval_help if surface is Surface.EVAL and self.eval_help else self.help
        return text.replace("{choices}", or_list(self.choices))

    def parse(self, text: Any) -> Any:
        """The value of the option typed as ``text`` (a value of the right type is kept).

        Raises:
            InputError: ``--seqlen must be an integer, got 'x'`` and the like.
        """
        if not isinstance(text, str) or self.type is str:
            return text
        shown = text.strip()
        if self.type is bool:
            if shown.lower() in ("1", "true", "yes", "on"):
                return True
            if shown.lower() in ("0", "false", "no", "off"):
                return False
            raise InputError(f"{self.flag} must be true or false, got {shown!r}")
        if self.type is int:
            try:
                return int(shown)
            except ValueError:
                raise InputError(f"{self.flag} must be an integer, got {shown!r}") from None
        try:
            value = float(shown)
        except ValueError:
            raise InputError(f"{self.flag} must be a number, got {shown!r}") from None
        if not math.isfinite(value):
            raise InputError(f"{self.flag} must be a finite number, got {shown!r}")
        return value

    def validate(self, value: Any) -> None:
        """Check a value of the option.

        Raises:
            InputError: one actionable line naming the option.
        """
        if self.check is not None:
            self.check(value)
        elif self.choices:
            if value not in self.choices:
                raise InputError(unknown_choice(self.noun, value, self.choices))
        elif self.type is int:
            if not _is_int(value) or (self.bounds is not None and not self.bounds.contains(value)):
                raise InputError(f"{self.flag} must be {self._kind()}, got {value!r}")
        elif self.type is float and (
            not _is_finite(value) or (self.bounds is not None and not self.bounds.contains(value))
        ):
            raise InputError(f"{self.flag} must be {self._kind()}, got {value!r}")

    def _kind(self) -> str:
        """``an integer >= 1`` or ``a number in [0, 1)``."""
        kind = "an integer" if self.type is int else "a number"
        return f"{kind} {self.bounds.describe()}" if self.bounds is not None else kind


def option(default: T, help: str, group: str, **spec: Any) -> T:
    """A dataclass field with its :class:`Option` (``spec``: the other attributes)."""
    return field(default=default, metadata={OPTION_KEY: Option(help=help, group=group, **spec)})


def resolve_options(cls: type) -> tuple[Option, ...]:
    """The options of dataclass ``cls``, in field order, with their name, type and default.

    Raises:
        TypeError: a field was declared without :func:`option`.
    """
    hints = typing.get_type_hints(cls)
    resolved = []
    for item in dataclasses.fields(cls):
        spec = item.metadata.get(OPTION_KEY)
        if not isinstance(spec, Option):
            raise TypeError(f"{cls.__name__}.{item.name} is not declared with option()")
        dashed = item.name.replace("_", "-")
        resolved.append(
            dataclasses.replace(
                spec,
                name=item.name,
                type=hints[item.name],
                default=item.default,
                flag=spec.flag or f"--{dashed}",
                off_flag=spec.off_flag or f"--no-{dashed}",
                noun=spec.noun or item.name.replace("_", " "),
            )
        )
    return tuple(resolved)


def or_list(values: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    if len(values) < 2:
        return "".join(values)
    return f"{', '.join(values[:-1])} or {values[-1]}"


def unknown_choice(noun: str, value: object, choices: Sequence[str]) -> str:
    """``unknown method 'obs': use duogpt, sparsegpt, wanda, magnitude or dense``."""
    return f"unknown {noun} {value!r}: use {or_list(choices)}"


def _is_int(value: object) -> bool:
    """An int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    """A finite int or float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
