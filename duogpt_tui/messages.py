"""Messages that the run worker posts to the App (small dataclasses, one job each).

The worker thread never touches widgets: it only posts these. :class:`RunEvent` wraps one solver
event; consecutive progress events replace each other in the App's queue (``can_replace``), so a
fast solver cannot flood the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

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
    """The pre-flight check passed and the run directory was created.

    Attributes:
        path: the run directory.
        config: the run's configuration.
        token: the run's token.
    """

    path: Path
    config: RunConfig
    token: int


@dataclass
class RunRefused(Message):
    """The run did not start: the pre-flight check or the run store refused the input.

    Attributes:
        error: one actionable line.
        token: the refused run's token.
    """

    error: str
    token: int
