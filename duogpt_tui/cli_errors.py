"""Errors on the command line as one ``error: ...`` line (ARCHITECTURE.md, "Rules of the house").

:class:`OneLineErrorGroup` is the command group of ``duogpt``: a usage error (an unknown option,
a missing argument), a bad option value (:class:`BadOptionValue`) or an unexpected error becomes
one line on stderr and a documented exit code, never a traceback (``--debug`` shows it).
``duogpt-tui`` turns the same errors into an :class:`~solver.errors.InputError`
(:func:`input_error_from`).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from duogpt_tui import summary
from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.progress import notice
from solver.errors import InputError


class BadOptionValue(Exception):
    """An option's value could not be parsed (``--seqlen must be an integer, got 'x'``).

    Raised by the parsers of registry options (``duogpt_tui.cli_options``). It is not a
    ``ValueError`` on purpose: Typer turns those into its own wordier message, and this one
    must reach :class:`OneLineErrorGroup` as it is.
    """


class OneLineErrorGroup(TyperGroup):
    """The command group: usage errors and unexpected errors become one ``error:`` line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI like Click's ``main``, printing every error as one line on stderr.

        A bad option value with ``--json`` also prints the input-error result on stdout.
        """
        argv = list(sys.argv[1:] if args is None else args)
        rest = (prog_name, complete_var)
        if not standalone_mode:
            return super().main(argv, *rest, False, windows_expand_args, **extra)
        try:
            code = super().main(argv, *rest, False, windows_expand_args, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(ExitCode.CANCELLED)
        except BadOptionValue as exc:
            typer.echo(f"error: {exc}", err=True)
            if "--json" in argv:
                typer.echo(summary.to_json(summary.input_error_result(str(exc))))
            sys.exit(ExitCode.INPUT)
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `duogpt`: the help text
                exc.show()  # type: ignore[attr-defined]
                sys.exit(ExitCode.INPUT)
            if is_usage_error(exc):
                typer.echo(f"error: {usage_message(exc)}", err=True)
                sys.exit(int(getattr(exc, "exit_code", ExitCode.INPUT)))
            if "--debug" in argv:  # a bug: one line, the traceback only with --debug
                raise
            typer.echo(
                f"error: internal error ({type(exc).__name__}: {first_line(exc)}); "
                "rerun with --debug for the traceback",
                err=True,
            )
            sys.exit(ExitCode.FAILED)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


def is_usage_error(exc: BaseException) -> bool:
    """True for Click's own errors (bad usage, bad parameter), which Typer vendors.

    Typer ships its own copy of Click, so the classes are recognised by their interface
    (``format_message`` and an integer ``exit_code``) rather than imported.
    """
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def usage_message(exc: BaseException) -> str:
    """A Click usage error as one line, with where to find help."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command_path = getattr(ctx, "command_path", None)
    if command_path:
        message += f" (see '{command_path} --help')"
    return message


def input_error_from(exc: BaseException) -> InputError | None:
    """A bad option value or a usage error as an :class:`InputError` (None for anything else)."""
    if isinstance(exc, BadOptionValue):
        return InputError(str(exc))
    if is_usage_error(exc):
        return InputError(usage_message(exc))
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def input_error(console: Console, exc: InputError, debug: bool, json_output: bool) -> NoReturn:
    """Report bad input (one line; the traceback with --debug) and exit with code 2 (with the
    JSON result on stdout under --json)."""
    if debug:
        notice(console, "".join(traceback.format_exception(exc)).rstrip())
    notice(console, f"error: {first_line(exc)}")
    if json_output:
        typer.echo(summary.to_json(summary.input_error_result(first_line(exc))))
    raise typer.Exit(ExitCode.INPUT)


@contextlib.contextmanager
def command_errors(
    console: Console, what: str, *, debug: bool, json_output: bool
) -> Iterator[None]:
    """The endings of a command that measures something (``duogpt eval``, ``duogpt speed``).

    Bad input: one line and exit 2; Ctrl-C: ``error: cancelled`` and exit 130; anything else:
    ``error: WHAT failed: ...`` and exit 1. ``--debug`` adds the traceback.
    """
    try:
        yield
    except typer.Exit:
        raise
    except InputError as exc:
        input_error(console, exc, debug, json_output)
    except KeyboardInterrupt:
        notice(console, "error: cancelled")
        raise typer.Exit(ExitCode.CANCELLED) from None
    except Exception as exc:
        if debug:
            notice(console, traceback.format_exc().rstrip())
        notice(console, f"error: {what} failed: {type(exc).__name__}: {first_line(exc)}")
        raise typer.Exit(ExitCode.FAILED) from None
