"""The report screen: the run's Markdown report, rendered from the event log, and its export.

The report is ``report.render_markdown`` of the App's log, so it is the same text that the run
directory's ``report.md`` holds. It is rendered to styled lines on a thread worker
(:mod:`duogpt_tui.widgets.report_view`), so a long report (hundreds of table rows) never holds
the UI while a run goes on. ``e`` exports it to a path typed in a modal (prefilled with
``<run name>-report.md`` in the working directory, never the run's own ``report.md``); an existing
file is only replaced after a confirmation. Another run's report starts at its top.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.style import Style
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.strip import Strip
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from duogpt_tui import report
from duogpt_tui.runstore import REPORT_FILE
from duogpt_tui.widgets.report_view import ReportView, render_lines, report_theme
from screens.base import WorkbenchScreen
from screens.dialogs import export_markdown
from solver.events import Event

if TYPE_CHECKING:
    from collections.abc import Sequence


EMPTY_REPORT = (
    "# No run yet\n\nStart a run on the setup screen (F2) or open one on the runs screen (F5).\n"
)
"""What the screen shows before there is a run."""

REFRESH_SECONDS = 2.0
"""How often a visible report of a running run is rendered again."""


def report_markdown(events: Sequence[Event], config: dict[str, object] | None) -> str:
    """The Markdown of ``events`` (a placeholder without a run; a rendering bug as a message)."""
    if not events:
        return EMPTY_REPORT
    try:
        return report.render_markdown(list(events), config=config)
    except Exception as error:  # a report bug must not take the workbench down
        return f"# The report could not be rendered\n\n`{type(error).__name__}: {error}`\n"


class ReportScreen(WorkbenchScreen):
    """The current run's report as Markdown, with an export key."""

    CSS_PATH = "report.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "Export report", tooltip="Write the report to a file"),
    ]

    def __init__(self) -> None:
        """Create the screen.

        Attributes:
            stale: the log changed since the report was last rendered.
            text: the Markdown shown (empty until the first rendering arrives).
        """
        super().__init__()
        self.stale = True
        self.text = ""
        self._generation = -1

    def compose(self) -> ComposeResult:
        """Header, the Markdown viewer and the footer."""
        yield Header()
        yield ReportView(id="report-view")
        yield Footer()

    def on_mount(self) -> None:
        """Render now, then follow the log (re-rendering at most every few seconds)."""
        self.sub_title = "report"
        self.app.log_changed.subscribe(self, self._log_changed)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.render_report(force=True))
        self.set_interval(REFRESH_SECONDS, self._tick)
        self.render_report()

    def on_screen_resume(self) -> None:
        """Shown again: render if the log changed meanwhile."""
        if self.is_mounted and self.stale:
            self.render_report()

    def on_resize(self, _event: events.Resize) -> None:
        """A new width needs new lines."""
        if self.is_mounted and self._width() != self.query_one(ReportView).width_rendered:
            self.render_report()

    def _log_changed(self, _event: Event | None) -> None:
        """Mark the report stale (a reset or the run's end renders at once); another run's
        report starts at its top."""
        self.stale = True
        generation = self.app.event_log.generation
        if generation != self._generation:
            self._generation = generation
            self.query_one(ReportView).scroll_home(animate=False)
        if (_event is None or self.app.event_log.terminal is _event) and self.is_current:
            self.render_report()

    def _tick(self) -> None:
        """Render a stale report while the screen is shown."""
        if self.stale and self.is_current:
            self.render_report()

    def report_text(self) -> str:
        """The Markdown of the App's log (a placeholder without a run)."""
        config = self.app.current_config
        return report_markdown(self.app.event_log.events, config.to_dict() if config else None)

    def _width(self) -> int:
        """The cells a report line may take (the view less its padding and scroll bar)."""
        view = self.query_one(ReportView)
        return max(view.content_region.width - view.styles.scrollbar_size_vertical, 20)

    def render_report(self, force: bool = False) -> None:
        """Render the report on a worker; the view is updated when the lines are ready.

        Args:
            force: render even when the text and width are those shown (a new theme).
        """
        self.stale = False
        config = self.app.current_config
        shown = ("", -1) if force else (self.text, self.query_one(ReportView).width_rendered)
        self._make_lines(
            list(self.app.event_log.events),
            config.to_dict() if config else None,
            self._width(),
            report_theme(self.app.theme_variables),
            shown,
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="report", description="report")
    def _make_lines(
        self,
        events: list[Event],
        config: dict[str, object] | None,
        width: int,
        styles: dict[str, Style],
        shown: tuple[str, int],
    ) -> tuple[str, list[Strip], int] | None:
        """Markdown and styled lines of the report (None when they are what is shown)."""
        text = report_markdown(events, config)
        if (text, width) == shown:
            return None
        return text, render_lines(text, width, styles), width

    @on(Worker.StateChanged)
    def _rendered(self, event: Worker.StateChanged) -> None:
        """Show the lines a render worker made."""
        if event.worker.group != "report":
            return
        if event.state == WorkerState.SUCCESS and event.worker.result is not None:
            text, lines, width = event.worker.result
            self.text = text
            self.query_one(ReportView).show_lines(lines, width)
        elif event.state == WorkerState.ERROR:
            self.notify(f"Could not render the report: {event.worker.error}", severity="error")

    # ----------------------------------------------------------------------------- export

    def default_export_path(self) -> Path:
        """``<run name>-report.md`` in the working directory (not the run's own ``report.md``,
        which the run keeps up to date: exporting over it would always ask to overwrite)."""
        run_path = self.app.run_path
        return Path.cwd() / (f"{run_path.name}-{REPORT_FILE}" if run_path else REPORT_FILE)

    def action_export(self) -> None:
        """Ask for a path (prefilled), confirm an overwrite, write the report."""
        if not self.app.event_log.events:
            self.notify("No run to export yet.", severity="warning")
            return
        export_markdown(
            self,
            self.report_text(),
            noun="report",
            default=self.default_export_path(),
            write=self.app.export_report,
            written=self._exported,
        )

    def _exported(self, path: Path) -> None:
        """Remember the last export (the app shows it)."""
        self.app.last_export = path
