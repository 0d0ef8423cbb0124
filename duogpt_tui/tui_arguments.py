"""The command line of ``duogpt-tui`` (Typer): ``[RUN_DIR]``, ``--runs-dir`` and every run option.

The run options come from the registry (``solver.config.OPTIONS``, through
:func:`~duogpt_tui.cli_options.with_options`), as for ``duogpt prune``; they prefill the setup
form and are not validated here (the form shows what is wrong next to each field). A value that
is not a number, or an unknown option, is an :class:`~solver.errors.InputError` with the same
one line as ``duogpt`` prints. No Textual here: :func:`parse_arguments` is what
``duogpt_tui.app.make_app`` calls before it builds the App.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from duogpt_tui.cli_errors import input_error_from
from duogpt_tui.cli_options import with_options
from duogpt_tui.exitcodes import EXIT_CODES_HELP
from duogpt_tui.runstore import RUNS_ROOT
from solver.config import RunConfig
from solver.options import Surface

PROG = "duogpt-tui"

arguments = typer.Typer(
    name=PROG,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@arguments.command(epilog=EXIT_CODES_HELP)
@with_options(Surface.TUI)
def workbench(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_DIR",
            help="Open this run directory (finished or running).",
            show_default=False,
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs live.")] = RUNS_ROOT,
    **values: Any,
) -> dict[str, Any]:
    """Terminal workbench for DuoGPT dual-sparse pruning: set up a run, watch it live, read and
    export its report, reopen and compare runs. The run options prefill the setup form."""
    return {"config": RunConfig(**values), "runs_dir": runs_dir, "open_path": run_dir}


def parse_arguments(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The App's keyword arguments for a command line: ``config``, ``runs_dir``, ``open_path``.

    Args:
        argv: the arguments (without the program name); None reads ``sys.argv``.

    Raises:
        InputError: an unknown option, a missing value, a value that is not a number.
        SystemExit: ``--help`` was given (the help is printed, exit code 0).
    """
    command = typer.main.get_command(arguments)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args, prog_name=PROG, standalone_mode=False)
    except Exception as exc:
        error = input_error_from(exc)
        if error is None:
            raise
        raise error from None
    if not isinstance(result, dict):  # --help was printed: Click returns its exit code
        raise SystemExit(result or 0)
    return result
