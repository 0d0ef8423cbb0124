"""The runs screen: every run under the runs folder; open one, mark several and compare them.

Enter opens the highlighted run (the App rebuilds its log from ``events.jsonl`` and shows the run
screen); space marks runs; ``c`` compares the marked runs (two or more) on
:class:`~screens.compare.CompareScreen`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from duogpt_tui.formatting import percent, perplexity
from duogpt_tui.runstore import RunSummary, list_runs
from screens.base import WorkbenchScreen
from screens.compare import CompareScreen

COLUMNS = ("✓", "status", "model", "method", "W", "X", "ppl dense", "ppl", "started", "run")
"""Column headers of the runs table."""

MARK = "●"
"""What the first column shows for a marked run."""

DAMAGED = " ⚠"
"""After the status of a run whose files were damaged (corrupt lines skipped; see its log)."""


def summary_cells(run: RunSummary, marked: bool) -> tuple[str, ...]:
    """The table cells of one run."""
    pattern = "" if run.pattern in ("", "unstructured") else f" {run.pattern}"
    return (
        MARK if marked else "",
        run.status + (DAMAGED if run.warnings else ""),
        run.model,
        run.method + pattern,
        percent(run.weight_sparsity),
        percent(run.act_sparsity),
        perplexity(run.ppl_dense),
        perplexity(run.ppl),
        run.started,
        run.run_id,
    )


class RunsScreen(WorkbenchScreen):
    """A table of the runs found under the App's runs folder."""

    CSS_PATH = "runs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_run", "Open", tooltip="Show the run's plots and report"),
        Binding("space", "mark", "Mark", tooltip="Mark the run for comparison"),
        Binding("c", "compare", "Compare marked", tooltip="Compare the marked runs (2+)"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        """Create the screen with no runs listed yet."""
        super().__init__()
        self.runs: list[RunSummary] = []
        self.marked: set[Path] = set()

    def compose(self) -> ComposeResult:
        """Header, where the runs come from, the table and the footer."""
        yield Header()
        yield Static("", id="runs-where", markup=False)
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        """Add the columns and list the runs."""
        self.sub_title = "runs"
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.refresh_runs()

    def on_screen_resume(self) -> None:
        """List the runs again whenever the screen is shown."""
        if self.is_mounted:
            self.refresh_runs()

    def refresh_runs(self) -> None:
        """Read the runs folder and rebuild the table (marks and cursor kept)."""
        table = self.query_one(DataTable)
        current = self.highlighted()
        self.runs = list_runs(self.app.runs_dir)
        self.marked &= {run.path for run in self.runs}
        table.clear()
        for run in self.runs:
            table.add_row(*summary_cells(run, run.path in self.marked), key=str(run.path))
        where = self.query_one("#runs-where", Static)
        count = f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
        where.update(f"{count} in {self.app.runs_dir}  ·  marked: {len(self.marked)}")
        if current is not None:
            paths = [run.path for run in self.runs]
            if current.path in paths:
                table.move_cursor(row=paths.index(current.path), animate=False)

    def highlighted(self) -> RunSummary | None:
        """The run under the table's cursor."""
        table = self.query_one(DataTable)
        if not self.runs or not 0 <= table.cursor_row < len(self.runs):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowSelected)
    def _row_selected(self, _event: DataTable.RowSelected) -> None:
        """Enter on a row opens it."""
        self.action_open_run()

    def action_open_run(self) -> None:
        """Open the highlighted run in the run screen."""
        run = self.highlighted()
        if run is not None:
            self.app.open_run(run.path)

    def action_mark(self) -> None:
        """Mark or unmark the highlighted run."""
        run = self.highlighted()
        if run is None:
            return
        self.marked ^= {run.path}
        table = self.query_one(DataTable)
        mark = MARK if run.path in self.marked else ""
        table.update_cell(str(run.path), table.ordered_columns[0].key, mark)
        self.query_one("#runs-where", Static).update(
            f"{len(self.runs)} runs in {self.app.runs_dir}  ·  marked: {len(self.marked)}"
        )

    def action_compare(self) -> None:
        """Compare the marked runs (in the table's order)."""
        chosen = [run for run in self.runs if run.path in self.marked]
        if len(chosen) < 2:
            self.notify("Mark two or more runs with space first.", severity="warning")
            return
        self.app.push_screen(CompareScreen([run.path for run in chosen]))

    def action_refresh(self) -> None:
        """Read the runs folder again."""
        self.refresh_runs()
