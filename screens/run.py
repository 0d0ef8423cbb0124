"""The run screen: progress, live plots, the layer table and the notes log.

The screen never talks to the worker. It subscribes to the App's ``log_changed`` signal: a note
(and a notice of the run store, such as a stale lock taken over) goes straight to the log
widget; anything else marks the screen *stale*, and a timer redraws the plots, table and header
from the App's :class:`~duogpt_tui.eventlog.EventLog` at most :data:`REDRAW_HZ` times a second
(and at once when the screen is shown again). Each plot redraws only when its series changed.
"""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, RichLog

from duogpt_tui.eventlog import EventLog
from duogpt_tui.eventtext import event_line
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.progress_header import ProgressHeader
from duogpt_tui.widgets.run_plots import (
    BlockSparsityPlot,
    DensityHistogram,
    ErrorPlot,
    PerplexityPlot,
)
from screens.base import WorkbenchScreen
from screens.dialogs import ConfirmDialog
from solver.events import Cancelled, Event, Failed, Finished, Note, PerplexityMeasured, RunStarted

REDRAW_HZ = 4.0
"""Most redraws of the plots per second."""


def theme_styles(variables: dict[str, str]) -> dict[str, Style]:
    """Rich styles for the notes log from the theme's ``warning``/``error``/``success`` colours."""
    return {
        name: Style(color=variables.get(name) or None, bold=True)
        for name in ("warning", "error", "success")
    }


LOG_KINDS = frozenset(
    {
        RunStarted.kind,
        PerplexityMeasured.kind,
        Note.kind,
        Finished.kind,
        Cancelled.kind,
        Failed.kind,
    }
)
"""Events written to the notes log (the rest are in the plots and the table)."""


def log_line(event: Event, styles: dict[str, Style] | None = None) -> Text | None:
    """The notes-log line for an event (None for events the log does not show).

    The text is :func:`duogpt_tui.eventtext.event_line`'s (the CLI prints the same, with the
    details this narrow log leaves out), stamped with the event's time; its head is coloured by
    its tone.

    Args:
        event: the event.
        styles: from :func:`theme_styles`; plain bold without it.
    """
    if event.kind not in LOG_KINDS:
        return None
    line = event_line(event)
    stamp = f"{event.t:8.1f}s  "
    if line.tone == "info":
        return Text.assemble(stamp, line.head, line.body)
    style = (styles or {}).get(line.tone, Style(bold=True))
    return Text.assemble(stamp, (line.head, style), line.body)


def notice_line(text: str, styles: dict[str, Style] | None = None) -> Text:
    """The notes-log line for a notice of the workbench or the run store (no time stamp)."""
    style = (styles or {}).get("warning", Style(bold=True))
    return Text.assemble(("note: ", style), text)


class RunScreen(WorkbenchScreen):
    """Live view of the App's event log (the current run, or a reopened one)."""

    CSS_PATH = "run.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_run", "Cancel run", tooltip="Stop the run after the current layer"),
    ]

    def __init__(self) -> None:
        """Create the screen; it starts stale so the first timer tick draws everything."""
        super().__init__()
        self.stale = True
        self._log_generation = -1
        self._log_count = 0
        self._notice_count = 0
        self._ready = False

    def compose(self) -> ComposeResult:
        """Header, progress, the four plots, the table and the notes log."""
        yield Header()
        yield ProgressHeader(id="progress")
        with Horizontal(id="plots"):
            yield ErrorPlot(id="error-plot")
            with Vertical(id="side-plots"):
                yield PerplexityPlot(id="ppl-plot")
                with Horizontal(id="sparsity-plots"):
                    yield DensityHistogram(id="density-plot")
                    yield BlockSparsityPlot(id="block-plot")
        with Horizontal(id="bottom"):
            yield LayerTable(id="layer-table")
            yield RichLog(id="notes", wrap=True, markup=False, auto_scroll=True, min_width=20)
        yield Footer()

    def on_mount(self) -> None:
        """Follow the App's log: the signal for news, a timer for throttled redraws."""
        self.sub_title = "run"
        self.app.log_changed.subscribe(self, self._log_changed)
        self.set_interval(1 / REDRAW_HZ, self._tick)
        self._ready = True
        self.redraw()

    def on_screen_resume(self) -> None:
        """Shown again (mode switch): redraw now rather than on the next tick.

        The first time the screen is shown this comes before :meth:`on_mount`, which draws.
        """
        if self._ready:
            self.redraw()

    def _log_changed(self, _event: Event | None) -> None:
        """Something arrived: notes now, the rest on the next tick."""
        self._append_notes(self.app.event_log)
        self.stale = True

    def _tick(self) -> None:
        """Redraw if the log changed since the last redraw."""
        if self.stale:
            self.redraw()

    def redraw(self) -> None:
        """Bring every widget up to date with the App's log."""
        log = self.app.event_log
        self.stale = False
        self.query_one(ProgressHeader).show(log)
        self.query_one(LayerTable).show(log)
        self.query_one(ErrorPlot).show(log)
        self.query_one(PerplexityPlot).show(log)
        self.query_one(DensityHistogram).show(log)
        self.query_one(BlockSparsityPlot).show(log)
        self._append_notes(log)
        started = log.started
        self.sub_title = f"run · {started.model} · {started.device}" if started else "run"

    def _append_notes(self, log: EventLog) -> None:
        """Write the log lines of events not written yet (all again after a reset)."""
        notes = self.query_one("#notes", RichLog)
        if log.generation != self._log_generation:
            notes.clear()
            self._log_generation = log.generation
            self._log_count = 0
            self._notice_count = 0
        styles = theme_styles(self.app.theme_variables)
        for text in log.notices[self._notice_count :]:
            notes.write(notice_line(text, styles))
        self._notice_count = len(log.notices)
        for event in log.events[self._log_count :]:
            line = log_line(event, styles)
            if line is not None:
                notes.write(line)
        self._log_count = len(log.events)

    def action_cancel_run(self) -> None:
        """Ask, then cancel the run (the run ends with a cancelled event and a valid run dir)."""

        def answered(yes: bool | None) -> None:
            """Cancel the run if the user said yes."""
            if yes:
                self.app.cancel_run()

        self.app.push_screen(
            ConfirmDialog(
                "Cancel the run?",
                "The solver stops after the current layer. The run directory stays valid and "
                "is marked cancelled; its report covers the blocks done so far.",
                yes="Cancel run",
                no="Keep running",
            ),
            answered,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Cancel is offered only while this App's run is in progress."""
        if action == "cancel_run":
            return self.app.run_active
        return True
