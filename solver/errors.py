"""Errors that carry one actionable line for the user (ARCHITECTURE.md, "Rules of the house").

The CLI maps them to exit codes: :class:`InputError` -> 2 (bad input, nothing was run),
:class:`RunError` -> 1 (the run itself failed). The message is a single line that says what was
wrong and what to do about it.
"""

from __future__ import annotations


class DuoGPTError(Exception):
    """Base class; ``str(err)`` is the one-line message shown to the user."""

    exit_code = 1


class InputError(DuoGPTError, ValueError):
    """Bad input from the user (a path, an option, a file): exit code 2."""

    exit_code = 2


class RunError(DuoGPTError, RuntimeError):
    """The run failed while it was working (numerical trouble, out of memory): exit code 1."""

    exit_code = 1
