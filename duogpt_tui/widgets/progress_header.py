"""The run's progress header: a bar of solved layers, the ETA and what is being worked on
(and the rank count of a run with several ranks).

The ETA is the run view's (:meth:`~duogpt_tui.runview.RunView.eta_seconds`), written as the CLI's
progress writes it (:func:`~duogpt_tui.formatting.eta`).

The final evaluation of the pruned model is a phase of its own (status ``evaluating``): the bar
then shows that evaluation's progress — its windows when the solver reports them, else the time
it has run against the dense evaluation's time on the same windows
(:meth:`~duogpt_tui.runview.RunView.eval_estimate`), never beyond 99% — instead of a full bar
of layers with an ETA of zero.
"""

from __future__ import annotations

import time

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
    ProgressHeader.-evaluating #progress-status { color: $accent; }
    ProgressHeader.-finished #progress-status { color: $success; }
    ProgressHeader.-cancelled #progress-status { color: $warning; }
    ProgressHeader.-failed #progress-status { color: $error; }
    """

    def compose(self) -> ComposeResult:
        """A status word, the bar, the ETA and the activity line."""
        yield Static("no run", markup=False, id="progress-status")
        yield ProgressBar(total=None, show_eta=False, id="progress-bar")
        yield Static("", markup=False, id="progress-activity")

    _eval_key: tuple[int, float | None] | None = None
    _eval_began = 0.0

    def show(self, log: EventLog, now: float | None = None) -> None:
        """Update the bar, the status and the activity line from ``log``.

        Args:
            log: the run's events.
            now: the monotonic clock (default: now), for the final evaluation's progress.
        """
        status = "evaluating" if log.final_evaluation else log.status
        for name in ("evaluating", "finished", "cancelled", "failed"):
            self.set_class(status == name, f"-{name}")
        words = {"empty": "no run", "running": "running"}
        # One line each at a fixed size: an update repaints them without a layout of the screen.
        self.query_one("#progress-status", Static).update(words.get(status, status), layout=False)
        if status == "evaluating":
            parts = self._evaluation_parts(log, time.monotonic() if now is None else now)
        else:
            parts = self._pruning_parts(log)
        parts.append(log.activity())
        if log.ranks > 1:  # a data-parallel run (--nproc): say so before the rest
            parts.insert(0, f"{log.ranks} ranks")
        self.query_one("#progress-activity", Static).update(" · ".join(parts), layout=False)

    def _pruning_parts(self, log: EventLog) -> list[str]:
        """The bar of solved layers; the layer count and the ETA."""
        bar = self.query_one(ProgressBar)
        if log.n_layers:
            bar.update(total=log.n_layers, progress=len(log.layers))
        else:
            bar.update(total=None)
        parts = []
        if log.layers and log.n_layers:
            parts.append(f"{len(log.layers)}/{log.n_layers} layers")
        time_left = eta(log.eta_seconds())
        if time_left:
            parts.append(time_left)
        return parts

    def _evaluation_parts(self, log: EventLog, now: float) -> list[str]:
        """The final evaluation's own bar: windows done, else time against its estimate."""
        key = (log.generation, log.progress_since)
        if key != self._eval_key:
            self._eval_key, self._eval_began = key, now
        bar = self.query_one(ProgressBar)
        progress = log.progress
        estimate = log.eval_estimate()
        running = max(now - self._eval_began, 0.0)
        parts = [f"all {log.n_layers} layers pruned" if log.n_layers else "pruned"]
        if progress is not None and progress.total and progress.done:
            bar.update(total=progress.total, progress=progress.done)
        elif estimate:
            bar.update(total=100, progress=min(99.0, 100 * running / estimate))
        else:
            bar.update(total=None)
        if estimate:
            left = estimate - running
            parts.append(f"{eta(left)} (estimate)" if left > 0 else "longer than estimated")
        return parts
