"""The exit codes of ``duogpt`` and ``duogpt-tui``, in one place (ARCHITECTURE.md, "Rules of the
house"): 0 done, 1 the run failed, 2 bad input, 130 cancelled."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """A process exit code, with what it means (:attr:`meaning`, for ``--help``)."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        """A member with its value and meaning."""
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "done"
    FAILED = 1, "the run failed"
    INPUT = 2, "bad input (nothing was run)"
    CANCELLED = 130, "cancelled (Ctrl-C or SIGTERM; the run directory says where it stopped)"


EXIT_CODES_HELP = "Exit codes: " + ", ".join(f"{code} {code.meaning}" for code in ExitCode) + "."
"""The exit codes as one sentence, for the epilog of ``--help``."""
