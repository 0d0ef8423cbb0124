"""How a run stops early: the cancel token it checks, and the exceptions it stops with.

Imports nothing heavy (no torch), so the app's runner and the CLI can name these types without
loading the solver.

* :class:`CancelToken` — what :func:`solver.run.pipeline.run` checks between layers and batches:
  anything with ``is_set()`` (a ``threading.Event``, a Textual worker's cancelled event).
* :class:`RunCancelled` — raised inside the solver when it sees the token set.
* :class:`RunStopped` — what the pipeline raises when the run ends early, for any reason: it says
  *where* the run was (time, block, phase); its ``__cause__`` says *why* (a
  :class:`RunCancelled`, a :class:`~solver.errors.DuoGPTError` with the user's one line, or any
  other exception: a bug). The pipeline never makes a terminal event itself (it *returns* its
  totals when it gets to the end): the runner (:mod:`duogpt_tui.runner`) is the one place that
  makes every terminal event, the run's ``Finished``, ``Failed`` or ``Cancelled``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NEVER", "CancelToken", "RunCancelled", "RunStopped"]


class CancelToken(Protocol):
    """Anything with ``is_set()``: a ``threading.Event``, a Textual worker's cancelled event."""

    def is_set(self) -> bool:
        """True once the run should stop."""
        ...


class _Never:
    """A cancel token that is never set."""

    def is_set(self) -> bool:
        """Always False."""
        return False


NEVER: CancelToken = _Never()
"""The token of a run that nobody can cancel."""


class RunCancelled(Exception):
    """The cancel token was seen set (between layers, blocks or evaluation batches)."""


class RunStopped(Exception):
    """The run ended before its end; ``__cause__`` is why (see the module text).

    Attributes:
        t: seconds since the run started when it stopped.
        block: the decoder block being pruned (-1 before the first).
        phase: where the run was, as words that follow "cancelled", e.g. ``while pruning`` or
            ``during the dense evaluation``.
    """

    def __init__(self, cause: BaseException, *, t: float, block: int, phase: str) -> None:
        """Say where the run stopped because of ``cause`` (which becomes ``__cause__``)."""
        if isinstance(cause, RunCancelled):
            text = f"cancelled {phase}"
        else:
            lines = str(cause).strip().splitlines()
            text = f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        super().__init__(text)
        self.__cause__ = cause
        self.t = t
        self.block = block
        self.phase = phase

    @property
    def cancelled(self) -> bool:
        """Whether the run stopped because it was cancelled."""
        return isinstance(self.__cause__, RunCancelled)
