"""The run screen: progress, live plots, the layer table and the notes log.

The header names the run shown (its directory, model, family and device); the line under the
progress says what discovery found in the model (the block list and the groups of layers that
share an input, in the family's own layer names) once the run's note says it. Selecting a row
of the layer table shows that layer's histogram; the last row follows the run. On a small
terminal (less than :data:`COMPACT_WIDTH` x :data:`COMPACT_HEIGHT`) the plots are shown one at
a time (``p`` pages through them) and the table and the notes share the bottom (``n``
switches).

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
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static

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

COMPACT_WIDTH = 120
"""Below this many columns the plots are paged, one at a time."""

COMPACT_HEIGHT = 36
"""Below this many rows the plots are paged, one at a time."""

TABLE_KEY = "W/X: sparsity · error before → after pruning (pruning adds it) · secs: solve"
"""What the layer table's columns mean (on the line above it)."""

PAGES = ("error-plot", "ppl-plot", "density-plot", "block-plot")
"""The plots in the order ``p`` pages through them on a small terminal."""


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
    AUTO_FOCUS = "#layer-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_run", "Cancel", tooltip="Stop the run (asks first)"),
        Binding("p", "next_plot", "Plot", tooltip="Show the next plot (small terminals)"),
        Binding("n", "toggle_notes", "Notes", tooltip="Table or notes (small terminals)"),
        Binding("u", "reopen", "To setup", show=False, tooltip="This run's settings in setup"),
    ]

    def __init__(self) -> None:
        """Create the screen; it starts stale so the first timer tick draws everything."""
        super().__init__()
        self.stale = True
        self._log_generation = -1
        self._log_count = 0
        self._notice_count = 0
        self._ready = False
        self.page = 0

    def compose(self) -> ComposeResult:
        """Header, progress, the four plots, the table and the notes log."""
        yield Header()
        yield ProgressHeader(id="progress")
        yield Static("", id="model-layout", classes="-empty", markup=False)
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
        self._show_page()
        self.query_one("#bottom").border_title = TABLE_KEY
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
        """Redraw if the log changed since the last redraw (the header also while the final
        evaluation runs: its bar moves with the clock)."""
        if self.stale:
            self.redraw()
        elif self.app.event_log.final_evaluation:
            self.query_one(ProgressHeader).show(self.app.event_log)

    def on_resize(self, event: events.Resize) -> None:
        """Page the plots on a small terminal."""
        size = event.size
        self.set_class(size.width < COMPACT_WIDTH or size.height < COMPACT_HEIGHT, "-compact")
        self.refresh_bindings()

    @property
    def compact(self) -> bool:
        """Whether the plots are paged (a small terminal)."""
        return self.has_class("-compact")

    def action_next_plot(self) -> None:
        """Show the next plot (small terminals)."""
        self.page = (self.page + 1) % len(PAGES)
        self._show_page()

    def _show_page(self) -> None:
        """Mark the plot of the current page (the CSS shows only it on a small terminal)."""
        shown = PAGES[self.page]
        for name in PAGES:
            self.query_one(f"#{name}").set_class(name == shown, "-page")
        self.query_one("#side-plots").set_class(shown != "error-plot", "-page")
        self.query_one("#sparsity-plots").set_class(
            shown in ("density-plot", "block-plot"), "-page"
        )

    def action_toggle_notes(self) -> None:
        """Show the notes instead of the table, or back (small terminals)."""
        self.toggle_class("-notes")

    def action_reopen(self) -> None:
        """Fill the setup form with this run's settings."""
        self.app.reopen_in_setup()

    @on(DataTable.RowHighlighted, "#layer-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The histogram shows the highlighted layer (the last row follows the run)."""
        table = self.query_one(LayerTable)
        row = event.cursor_row if event.cursor_row < table.row_count - 1 else None
        self.query_one(DensityHistogram).show(self.app.event_log, row)

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
        self.sub_title = run_title(self.app.run_path, log)
        self._show_layout(log)

    def _show_layout(self, log: EventLog) -> None:
        """The line of what discovery found (hidden until the run's note says it)."""
        line = self.query_one("#model-layout", Static)
        text = layout_line(log)
        if str(line.content) != text:
            line.update(text)
            line.set_class(not text, "-empty")

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
        """Ask, then cancel the run (the run ends with a cancelled event and a valid run dir).

        A yes counts whenever it comes: during the last layer or the final evaluation too, the
        run ends cancelled; if it ended meanwhile, a notice says how.
        """

        def answered(yes: bool | None) -> None:
            """Cancel the run if the user said yes."""
            if yes:
                self.app.cancel_run()

        if self.app.event_log.final_evaluation:
            where = "The final evaluation stops at its next batch"
        else:
            where = "The solver stops after the current layer"
        self.app.push_screen(
            ConfirmDialog(
                "Cancel the run?",
                f"{where}. The run directory stays valid and is marked cancelled; its report "
                "covers the blocks done so far.",
                yes="Cancel run",
                no="Keep running",
            ),
            answered,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Cancel is offered only while this App's run is in progress; paging only on a small
        terminal."""
        if action == "cancel_run":
            return self.app.run_active
        if action in ("next_plot", "toggle_notes"):
            return self.compact
        return True


def run_title(path: object, log: EventLog) -> str:
    """The header's subtitle: the run's directory name, model and device."""
    parts = ["run"]
    name = getattr(path, "name", "")
    if name:
        parts.append(str(name))
    if log.started is not None:
        family = log.started.family
        parts += [f"{log.started.model} ({family})" if family else log.started.model]
        parts.append(log.started.device)
    return " · ".join(parts)


def layout_line(log: EventLog) -> str:
    """The layout line: the family, block list and groups that discovery found ("" before)."""
    return log.layout.replace(" -> ", " → ")
