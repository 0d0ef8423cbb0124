"""What ``duogpt`` shows while a run goes on, and how Ctrl-C reaches the run.

:class:`RunDisplay` draws a run's events on stderr (a progress bar with ETA on a terminal, plain
periodic lines otherwise); :func:`cancel_on_signals` turns SIGINT/SIGTERM into the run's cancel
flag. stdout stays for results (see :mod:`duogpt_tui.cli`).

The display folds the events into a :class:`~duogpt_tui.runview.RunView` as they come: the bar's
description is the view's activity line and its ETA the view's, written as the TUI writes them
(:mod:`duogpt_tui.eventtext`, :func:`duogpt_tui.formatting.eta`), so the two never disagree.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from duogpt_tui.eventtext import activity, event_line
from duogpt_tui.formatting import eta
from duogpt_tui.runview import RunView
from solver import events as ev

PLAIN_PROGRESS_EVERY_S = 10.0
"""Without a terminal, a progress line per phase at most this often."""

UNKNOWN_ETA = "ETA ?"
"""What the blocks bar says before the first layer is solved (the view knows no ETA yet)."""

LINE_KINDS = frozenset(
    {
        ev.RunStarted.kind,
        ev.BlockFinished.kind,
        ev.PerplexityMeasured.kind,
        ev.TasksMeasured.kind,
        ev.Note.kind,
        ev.Finished.kind,
        ev.Cancelled.kind,
    }
)
"""Events printed as a line on stderr (a failure is printed once the run ended, as an error)."""


def notice(console: Console, text: str) -> None:
    """Print text on stderr as it is (no markup, no highlighting)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """The console for progress and notices (stderr; never wraps lines)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


class RunDisplay:
    """Shows a run's events on stderr: a live progress bar on a terminal, plain lines otherwise.

    Attributes:
        console: the stderr console.
        live: whether a progress bar is drawn (the console is a terminal).
        view: the run so far, folded from the events shown.
    """

    def __init__(self, console: Console, cancel: threading.Event | None = None) -> None:
        """Prepare the display (nothing is drawn until it is entered)."""
        self.console = console
        self.live = console.is_terminal
        self.view = RunView()
        self._cancel = cancel
        self._cancel_said = False
        self._progress: Progress | None = None
        self._blocks: TaskID | None = None
        self._phase_task: TaskID | None = None
        self._phase = ""
        self._last_line = 0.0

    def __enter__(self) -> RunDisplay:
        """Start the progress bar on a terminal."""
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=self.console,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the progress bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def line(self, text: str) -> None:
        """Print one notice line (above the bar when there is one)."""
        notice(self.console, text)

    def show(self, event: ev.Event) -> None:
        """Update the display for one event."""
        self._say_cancel()
        self.view.add(event)
        if isinstance(event, ev.Progress):
            self._on_progress(event)
            return
        if isinstance(event, ev.RunStarted) and self._progress is not None:
            self._blocks = self._progress.add_task(
                "blocks", total=max(event.n_blocks, 1), eta=UNKNOWN_ETA
            )
        self._update_blocks(advance=1 if isinstance(event, ev.BlockFinished) else 0)
        if event.kind in LINE_KINDS:
            self.line(event_line(event).text)

    def _say_cancel(self) -> None:
        """Tell the user once that cancellation was asked for."""
        if self._cancel is not None and self._cancel.is_set() and not self._cancel_said:
            self._cancel_said = True
            self.line("cancelling at the next layer (press Ctrl-C again to stop at once)")

    def _on_progress(self, event: ev.Progress) -> None:
        """Update the bars, or print a throttled plain line."""
        if self._progress is not None:
            if event.phase == "prune" and self._blocks is not None:
                self._update_blocks()
            else:
                self._update_phase(event)
            return
        now = time.monotonic()
        key = event.phase if event.phase == "prune" else f"{event.phase} {event.label}"
        if key != self._phase or now - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._phase = key
            self._last_line = now
            self.line(event_line(event).text)

    def _update_phase(self, event: ev.Progress) -> None:
        """Show a non-block phase (load, eval, save...) on its own bar."""
        assert self._progress is not None
        description = f"{event.phase} {event.label}".strip()
        total = max(event.total, 1)
        if self._phase_task is None:
            self._phase_task = self._progress.add_task(description, total=total, eta="")
        elif description != self._phase:  # a new phase: restart its clock
            self._progress.reset(self._phase_task, total=total, description=description, eta="")
        self._phase = description
        self._progress.update(
            self._phase_task, description=description, total=total, completed=event.done
        )

    def _update_blocks(self, advance: int = 0) -> None:
        """Bring the blocks bar up to date with the view (no-op without one)."""
        if self._progress is not None and self._blocks is not None:
            self._progress.update(
                self._blocks,
                description=activity(self.view),
                advance=advance,
                eta=eta(self.view.eta_seconds()) or ("" if self.view.terminal else UNKNOWN_ETA),
            )


@contextlib.contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGINT/SIGTERM set ``cancel``; a second one raises ``KeyboardInterrupt``.

    The previous handlers are restored on exit. Outside the main thread (where handlers cannot
    be installed) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield cancel
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
