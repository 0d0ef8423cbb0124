"""What ``duogpt`` shows while a run goes on, and how Ctrl-C reaches the run.

:class:`RunDisplay` draws a run's events on stderr (a progress bar with ETA on a terminal, plain
periodic lines otherwise); :func:`cancel_on_signals` turns SIGINT/SIGTERM into the run's cancel
flag. stdout stays for results (see :mod:`duogpt_tui.cli`).
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
    TimeRemainingColumn,
)

from duogpt_tui import summary
from solver import events as ev

PLAIN_PROGRESS_EVERY_S = 10.0
"""Without a terminal, a progress line per phase at most this often."""


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
    """

    def __init__(self, console: Console, cancel: threading.Event | None = None) -> None:
        """Prepare the display (nothing is drawn until it is entered)."""
        self.console = console
        self.live = console.is_terminal
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
                TextColumn("ETA"),
                TimeRemainingColumn(),
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
        if isinstance(event, ev.Progress):
            self._on_progress(event)
        elif isinstance(event, ev.RunStarted):
            self._on_started(event)
        elif isinstance(event, ev.BlockStarted):
            self._update_blocks(description=f"block {event.block + 1}/{event.n_blocks}")
        elif isinstance(event, ev.LayerSolved):
            self._update_blocks(description=f"block {event.block} {event.name}")
        elif isinstance(event, ev.BlockFinished):
            self._on_block(event)
        elif isinstance(event, ev.PerplexityMeasured):
            self._on_ppl(event)
        elif isinstance(event, ev.Note):
            self.line(f"{'warning' if event.level == 'warning' else 'note'}: {event.text}")
        elif isinstance(event, ev.Finished):
            self.line(f"finished in {event.seconds:.1f}s")
        elif isinstance(event, ev.Cancelled):
            where = f"in block {event.block}" if event.block >= 0 else "before pruning"
            self.line(f"cancelled {where} ({event.reason})")

    def _say_cancel(self) -> None:
        """Tell the user once that cancellation was asked for."""
        if self._cancel is not None and self._cancel.is_set() and not self._cancel_said:
            self._cancel_said = True
            self.line("cancelling at the next layer (press Ctrl-C again to stop at once)")

    def _on_started(self, event: ev.RunStarted) -> None:
        """Describe the run and start the blocks bar."""
        self.line(
            f"{event.model}: {event.family}, {event.n_blocks} blocks, {event.n_layers} layers, "
            f"on {event.device}"
        )
        if self._progress is not None:
            self._blocks = self._progress.add_task("blocks", total=max(event.n_blocks, 1))

    def _on_progress(self, event: ev.Progress) -> None:
        """Update the phase bar, or print a throttled plain line."""
        if self._progress is not None:
            self._update_phase(event)
            return
        now = time.monotonic()
        key = event.phase if event.phase == "prune" else f"{event.phase} {event.label}"
        if key != self._phase or now - self._last_line >= PLAIN_PROGRESS_EVERY_S:
            self._phase = key
            self._last_line = now
            label = f" {event.label}" if event.label else ""
            self.line(f"{event.phase}: {event.done}/{event.total}{label}")

    def _update_phase(self, event: ev.Progress) -> None:
        """Show a non-block phase (load, eval, save...) on its own bar."""
        assert self._progress is not None
        if event.phase == "prune" and self._blocks is not None:
            self._update_blocks(description=event.label or "prune")
            return
        description = f"{event.phase} {event.label}".strip()
        total = max(event.total, 1)
        if self._phase_task is None:
            self._phase_task = self._progress.add_task(description, total=total)
        elif description != self._phase:  # a new phase: restart its clock and ETA
            self._progress.reset(self._phase_task, total=total, description=description)
        self._phase = description
        self._progress.update(
            self._phase_task, description=description, total=total, completed=event.done
        )

    def _update_blocks(self, description: str | None = None, advance: int = 0) -> None:
        """Update the blocks bar (no-op without one)."""
        if self._progress is not None and self._blocks is not None:
            self._progress.update(self._blocks, description=description, advance=advance)

    def _on_block(self, event: ev.BlockFinished) -> None:
        """Advance the blocks bar and print the block's line."""
        self._update_blocks(description=f"block {event.block} done", advance=1)
        self.line(
            f"block {event.block} done in {event.seconds:.1f}s: "
            f"W {summary.percent(event.weight_sparsity)}, X {summary.percent(event.act_sparsity)}, "
            f"peak {event.peak_memory_mb:.0f} MB"
        )

    def _on_ppl(self, event: ev.PerplexityMeasured) -> None:
        """Print a perplexity with its protocol."""
        where = f" after block {event.block}" if event.label == "proxy" else ""
        self.line(
            f"perplexity ({event.label}{where}): {summary.number(event.ppl)} "
            f"[{event.text}, {event.windows}x{event.seqlen} tokens, "
            f"X {summary.percent(event.act_sparsity)}]"
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
