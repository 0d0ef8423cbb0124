"""The registry's run options as Typer parameters (``solver.config.OPTIONS``, never a copy).

``duogpt prune``, ``duogpt eval`` and ``duogpt-tui`` declare only their own options (``--out``,
``--json``, ``RUN_DIR``...) and take the run options with :func:`with_options`, which builds them
from the registry: flag, help, type, default. Numbers are parsed by
:meth:`solver.options.Option.parse`, so a bad value reads the same everywhere
(``--seqlen must be an integer, got 'x'``); choices and bounds are checked by
``RunConfig.validate``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from duogpt_tui.cli_errors import BadOptionValue
from solver.config import options_on
from solver.errors import InputError
from solver.options import Option, Surface

F = TypeVar("F", bound=Callable[..., Any])

METAVARS: dict[type, str] = {int: "INT", float: "FLOAT"}
"""How ``--help`` names the value of a number option."""


def value_parser(spec: Option) -> Callable[[Any], Any]:
    """The Typer parser of a number option: its :meth:`~solver.options.Option.parse`.

    Raises (from the parser):
        BadOptionValue: the text is not a number of the option's type.
    """

    def parse(text: Any) -> Any:
        """Parse one value typed on the command line (a default is kept as it is)."""
        try:
            return spec.parse(text)
        except InputError as error:
            raise BadOptionValue(str(error)) from None

    return parse


def parameter(spec: Option, surface: Surface, inherited: str | None = None) -> inspect.Parameter:
    """One registry option as a keyword-only Typer parameter.

    Args:
        spec: the option.
        surface: where it is shown (picks its help text).
        inherited: when given, the option defaults to None (the command works the value out)
            and ``--help`` shows this text as its default.
    """
    decl = f"{spec.flag}/{spec.off_flag}" if spec.type is bool else spec.flag
    info = typer.Option(
        decl,
        help=spec.help_on(surface),
        metavar=METAVARS.get(spec.type),
        parser=value_parser(spec) if spec.type in METAVARS else None,
        show_default=True if inherited is None else inherited,
    )
    kind: Any = spec.type if inherited is None else spec.type | None
    return inspect.Parameter(
        spec.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=spec.default if inherited is None else None,
        annotation=Annotated[kind, info],
    )


def with_options(surface: Surface, inherited: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Give a command the registry options of ``surface``.

    The command takes them as ``**values`` (keyword arguments named after the config fields).
    ``--help`` lists them after the command's parameters without a default (the context, the
    arguments) and before its own options.

    Args:
        surface: whose options.
        inherited: options that default to None, with the default text ``--help`` shows
            (``duogpt eval`` takes them from the run directory).
    """
    inherited = inherited or {}

    def decorate(command: F) -> F:
        """Wrap ``command`` with a signature that Typer reads the options from."""
        own = [
            param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for param in inspect.signature(command, eval_str=True).parameters.values()
            if param.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        options = [
            parameter(spec, surface, inherited.get(spec.name)) for spec in options_on(surface)
        ]
        leading = [param for param in own if param.default is inspect.Parameter.empty]
        trailing = [param for param in own if param.default is not inspect.Parameter.empty]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            """Call the command with every parameter by name."""
            return command(**kwargs)

        wrapper.__signature__ = inspect.Signature([*leading, *options, *trailing])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
