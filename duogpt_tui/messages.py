"""Messages that the run's workers post to the App (small dataclasses, one job each).

The worker threads never touch widgets: they only post these. Starting a run takes two workers:
the *prepare* worker runs the pre-flight check and creates the run directory
(:class:`RunLaunched` or :class:`RunRefused`); only then does the *run* worker iterate the solver,
posting one :class:`RunEvent` per event and a :class:`RunNotice` for each notice of the run store.
Consecutive progress events replace each other in the App's queue (``can_replace``), so a fast
solver cannot flood the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from duogpt_tui.runstore import RunDir
from solver.config import RunConfig
from solver.events import Event, Progress


@dataclass
class RunEvent(Message):
    """One event from the running solver.

    Attributes:
        event: the solver event.
        token: the run it belongs to (the App's counter when the run was started).
    """

    event: Event
    token: int

    def can_replace(self, message: Message) -> bool:
        """A progress event may be dropped when a newer one of the same run is queued."""
        return (
            isinstance(self.event, Progress)
            and isinstance(message, RunEvent)
            and isinstance(message.event, Progress)
            and message.token == self.token
        )


@dataclass
class RunLaunched(Message):
    """The pre-flight check passed and the run directory was created (and locked).

    Attributes:
        path: the run directory.
        config: the run's configuration.
        token: the run's token.
        run_dir: the locked run directory, handed to the run worker; its ``notes`` (e.g. a stale
            lock taken over) are shown in the run screen's log.
    """

    path: Path
    config: RunConfig
    token: int
    run_dir: RunDir | None = None


@dataclass
class RunRefused(Message):
    """The run did not start: the pre-flight check or the run store refused the input.

    Attributes:
        error: one actionable line.
        token: the refused run's token.
    """

    error: str
    token: int


@dataclass
class RunNotice(Message):
    """A notice of the run store during the run (e.g. the report could not be written).

    Attributes:
        text: one line.
        token: the run's token.
    """

    text: str
    token: int
