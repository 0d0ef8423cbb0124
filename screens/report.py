"""The report screen: the run's Markdown report, rendered from the event log, and its export.

The report is ``report.render_markdown`` of the App's log, so it is the same text that the run
directory's ``report.md`` holds. ``e`` exports it: to the run directory's ``report.md`` or a path
typed in a modal; an existing file is only replaced after a confirmation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, MarkdownViewer

from duogpt_tui import report
from screens.dialogs import ConfirmDialog, PathDialog
from solver.errors import InputError
from solver.events import Event

if TYPE_CHECKING:
    from duogpt_tui.app import DuoGPTApp

EMPTY_REPORT = (
    "# No run yet\n\nStart a run on the setup screen (F2) or open one on the runs screen (F5).\n"
)
"""What the screen shows before there is a run."""

REFRESH_SECONDS = 2.0
"""How often a visible report of a running run is rendered again."""


class ReportScreen(Screen[None]):
    """The current run's report as Markdown, with an export key."""

    CSS_PATH = "report.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "Export report", tooltip="Write the report to a file"),
    ]

    def __init__(self) -> None:
        """Create the screen."""
        super().__init__()
        self.stale = True
        self.text = ""

    @property
    def duo(self) -> DuoGPTApp:
        """The workbench App (typed)."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        """Header, the Markdown viewer and the footer."""
        yield Header()
        yield MarkdownViewer(EMPTY_REPORT, show_table_of_contents=False, id="report-view")
        yield Footer()

    def on_mount(self) -> None:
        """Render now, then follow the log (re-rendering at most every few seconds)."""
        self.sub_title = "report"
        self.duo.log_changed.subscribe(self, self._log_changed)
        self.set_interval(REFRESH_SECONDS, self._tick)
        self.render_report()

    def on_screen_resume(self) -> None:
        """Shown again: render if the log changed meanwhile."""
        if self.is_mounted and self.stale:
            self.render_report()

    def _log_changed(self, _event: Event | None) -> None:
        """Mark the report stale (a reset or the run's end renders at once)."""
        self.stale = True
        if (_event is None or self.duo.event_log.terminal is _event) and self.is_current:
            self.render_report()

    def _tick(self) -> None:
        """Render a stale report while the screen is shown."""
        if self.stale and self.is_current:
            self.render_report()

    def report_text(self) -> str:
        """The Markdown of the App's log (a placeholder without a run)."""
        log = self.duo.event_log
        if not log.events:
            return EMPTY_REPORT
        config = self.duo.current_config
        try:
            return report.render_markdown(log.events, config=config.to_dict() if config else None)
        except Exception as error:  # a report bug must not take the workbench down
            return f"# The report could not be rendered\n\n`{type(error).__name__}: {error}`\n"

    def render_report(self) -> None:
        """Render the report into the viewer (only when the text changed)."""
        self.stale = False
        text = self.report_text()
        if text != self.text:
            self.text = text
            self.query_one(MarkdownViewer).document.update(text)

    # ----------------------------------------------------------------------------- export

    def default_export_path(self) -> Path:
        """The run directory's ``report.md``, or ``report.md`` here without a run directory."""
        run_path = self.duo.run_path
        return (run_path / "report.md") if run_path else Path.cwd() / "report.md"

    def action_export(self) -> None:
        """Ask for a path (prefilled), confirm an overwrite, write the report."""
        if not self.duo.event_log.events:
            self.notify("No run to export yet.", severity="warning")
            return
        text = self.report_text()

        def chosen(path: Path | None) -> None:
            """Write to the chosen path, asking first if it exists."""
            if path is None:
                return
            if path.exists():
                self.app.push_screen(
                    ConfirmDialog(
                        "Replace the file?",
                        f"{path} already exists. Replace it with this report?",
                        yes="Replace",
                        no="Keep it",
                    ),
                    lambda yes: self.write(text, path) if yes else None,
                )
            else:
                self.write(text, path)

        self.app.push_screen(PathDialog("Export the report to", self.default_export_path()), chosen)

    def write(self, text: str, path: Path) -> None:
        """Write ``text`` to ``path`` (atomically, via the run store) and say where it went."""
        try:
            written = self.duo.export_report(text, path)
        except InputError as error:
            self.notify(str(error), title="Export failed", severity="error")
            return
        self.duo.last_export = written
        self.notify(f"Report written to {written}", title="Exported")
