"""The run's progress header: a bar of solved layers, the ETA and what is being worked on.

The ETA is the run view's (:meth:`~duogpt_tui.runview.RunView.eta_seconds`), written as the CLI's
progress writes it (:func:`~duogpt_tui.formatting.eta`).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from duogpt_tui.eventlog import EventLog
from duogpt_tui.formatting import eta


class ProgressHeader(Horizontal):
    """Layers solved out of all layers, an ETA from the event times, and the current activity."""

    DEFAULT_CSS = """
    ProgressHeader {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    ProgressHeader #progress-status {
        width: 12;
        height: 1;
        text-style: bold;
    }
    ProgressHeader ProgressBar {
        width: auto;
        margin-right: 2;
    }
    ProgressHeader #progress-activity {
        width: 1fr;
        height: 1;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ProgressHeader.-finished #progress-status { color: $success; }
    ProgressHeader.-cancelled #progress-status { color: $warning; }
    ProgressHeader.-failed #progress-status { color: $error; }
    """

    def compose(self) -> ComposeResult:
        """A status word, the bar, the ETA and the activity line."""
        yield Static("no run", markup=False, id="progress-status")
        yield ProgressBar(total=None, show_eta=False, id="progress-bar")
        yield Static("", markup=False, id="progress-activity")

    def show(self, log: EventLog) -> None:
        """Update the bar, the status and the activity line from ``log``."""
        status = log.status
        for name in ("finished", "cancelled", "failed"):
            self.set_class(status == name, f"-{name}")
        bar = self.query_one(ProgressBar)
        if log.n_layers:
            bar.update(total=log.n_layers, progress=len(log.layers))
        else:
            bar.update(total=None)
        words = {"empty": "no run", "running": "running"}
        # One line each at a fixed size: an update repaints them without a layout of the screen.
        self.query_one("#progress-status", Static).update(words.get(status, status), layout=False)
        parts = []
        if log.layers and log.n_layers:
            parts.append(f"{len(log.layers)}/{log.n_layers} layers")
        time_left = eta(log.eta_seconds())
        if time_left:
            parts.append(time_left)
        parts.append(log.activity())
        self.query_one("#progress-activity", Static).update(" · ".join(parts), layout=False)
