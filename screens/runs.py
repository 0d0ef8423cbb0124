"""The runs screen: every run under the runs folder; open, filter, sort, delete and compare.

Enter opens the highlighted run (the App rebuilds its log from ``events.jsonl`` and shows the run
screen); space marks runs; ``c`` compares the marked runs (two or more) on
:class:`~screens.compare.CompareScreen`. ``/`` filters the list (every word typed must appear in
the row), ``s`` cycles the sort order, ``d`` deletes the highlighted run after a confirmation,
``u`` reopens its settings in setup. The pane beside the table (below it on a narrow terminal)
shows the highlighted run's configuration, headline figures and the first lines of its report.
A run opened from elsewhere (``duogpt-tui RUN_DIR``) is listed too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Static

from duogpt_tui.formatting import duration, percent, perplexity
from duogpt_tui.runstore import REPORT_FILE, RunDir, RunSummary, list_runs
from screens.base import WorkbenchScreen
from screens.compare import CompareScreen
from screens.dialogs import ConfirmDialog
from solver.config import RunConfig
from solver.errors import InputError

COLUMNS = (
    "✓",
    "status",
    "model",
    "method",
    "W",
    "X",
    "calib",
    "ppl dense",
    "ppl",
    "time",
    "started",
    "run",
)
"""Column headers of the runs table (calib: calibration samples x sequence length)."""

MARK = "●"
"""What the first column shows for a marked run."""

DAMAGED = " ⚠"
"""After the status of a run whose files were damaged (corrupt lines skipped; see its log)."""

SORTS = ("newest", "ppl", "weight sparsity", "model", "time")
"""The sort orders ``s`` cycles through."""

REPORT_LINES = 12
"""Lines of a run's report shown in the detail pane."""

NARROW = 120
"""Below this many columns the detail pane goes under the table."""


def run_config(path: Path) -> RunConfig | None:
    """A run's configuration (None when it cannot be read)."""
    try:
        return RunDir(path).config()
    except (InputError, OSError, ValueError, TypeError):
        return None


def summary_cells(
    run: RunSummary, marked: bool, config: RunConfig | None = None
) -> tuple[str, ...]:
    """The table cells of one run."""
    pattern = "" if run.pattern in ("", "unstructured") else f" {run.pattern}"
    calib = f"{config.nsamples}x{config.seqlen}" if config is not None else "-"
    return (
        MARK if marked else "",
        run.status + (DAMAGED if run.warnings else ""),
        run.model,
        run.method + pattern,
        percent(run.weight_sparsity),
        percent(run.act_sparsity),
        calib,
        perplexity(run.ppl_dense),
        perplexity(run.ppl),
        duration(run.seconds, "-"),
        run.started,
        run.run_id,
    )


def sort_key(order: str, run: RunSummary) -> tuple[object, ...]:
    """The key of ``run`` for sort ``order`` (missing figures last)."""
    if order == "ppl":
        return (run.ppl is None, run.ppl or 0.0)
    if order == "weight sparsity":
        return (run.weight_sparsity is None, -(run.weight_sparsity or 0.0))
    if order == "model":
        return (run.model, run.started)
    if order == "time":
        return (run.seconds is None, run.seconds or 0.0)
    return ()


def detail_text(run: RunSummary, config: RunConfig | None) -> str:
    """The detail pane: configuration, headline and the first lines of the report."""
    lines = [run.run_id, f"{run.status} · started {run.started or '?'}", ""]
    if config is not None:
        lines += [
            f"model      {config.model}",
            f"method     {config.method} ({config.pattern})",
            f"sparsity   W {config.weight_sparsity:g} · X {config.act_sparsity:g} "
            f"({config.act_rule})",
            f"calib      {config.calib}: {config.nsamples} x {config.seqlen} tokens",
            f"eval       {config.eval}: {config.eval_windows} windows",
            f"seed       {config.seed} · device {config.device} · {config.dtype}",
            "",
        ]
    lines += [
        f"W {percent(run.weight_sparsity)} · X {percent(run.act_sparsity)} · "
        f"ppl {perplexity(run.ppl)} (dense {perplexity(run.ppl_dense)}) · "
        f"{duration(run.seconds, '-')}",
        "",
    ]
    try:
        report = (run.path / REPORT_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        report = ["(no report yet)"]
    lines += report[:REPORT_LINES]
    return "\n".join(lines)


class RunsScreen(WorkbenchScreen):
    """A table of the runs found under the App's runs folder, and the highlighted one's detail."""

    CSS_PATH = "runs.tcss"
    AUTO_FOCUS = "#runs-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_run", "Open", tooltip="Show the run's plots and report"),
        Binding("space", "mark", "Mark", key_display="␣", tooltip="Mark the run for comparison"),
        Binding("c", "compare", "Compare", tooltip="Compare the marked runs (2+)"),
        Binding("slash", "filter", "Filter", tooltip="Show only the runs with these words"),
        Binding("s", "sort", "Sort", show=False, tooltip="Cycle the sort order"),
        Binding("d", "delete", "Delete", tooltip="Delete the run's directory (asks first)"),
        Binding("u", "reopen", "To setup", show=False, tooltip="The run's settings in setup"),
        Binding("r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        """Create the screen with no runs listed yet.

        Attributes:
            runs: the runs shown, in table order (filtered and sorted).
            marked: the marked runs' directories.
            order: the sort order (one of :data:`SORTS`).
            query: the filter's words.
        """
        super().__init__()
        self.runs: list[RunSummary] = []
        self.marked: set[Path] = set()
        self.order = SORTS[0]
        self.query_text = ""
        self._configs: dict[Path, RunConfig | None] = {}

    def compose(self) -> ComposeResult:
        """Header, where the runs come from, the filter, the table and its detail, the footer."""
        yield Header()
        yield Static("", id="runs-where", markup=False)
        yield Input(placeholder="filter: words that the row must hold (/)", id="runs-filter")
        with Horizontal(id="runs-body"):
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="runs-detail"):
                yield Static("", id="runs-detail-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        """Add the columns and list the runs."""
        self.sub_title = "runs"
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.refresh_runs()

    def on_resize(self, event: events.Resize) -> None:
        """The detail pane under the table on a narrow terminal."""
        self.set_class(event.size.width < NARROW, "-narrow")

    def on_screen_resume(self) -> None:
        """List the runs again whenever the screen is shown."""
        if self.is_mounted:
            self.refresh_runs()

    def config_of(self, run: RunSummary) -> RunConfig | None:
        """The run's configuration (read once)."""
        if run.path not in self._configs:
            self._configs[run.path] = run_config(run.path)
        return self._configs[run.path]

    def all_runs(self) -> list[RunSummary]:
        """The runs folder's runs, and the runs opened from elsewhere."""
        runs = list_runs(self.app.runs_dir)
        listed = {run.path.resolve() for run in runs}
        for path in self.app.opened_runs:
            if path.resolve() not in listed and path.is_dir():
                runs += [r for r in list_runs(path.parent) if r.path.resolve() == path.resolve()]
        return runs

    def refresh_runs(self) -> None:
        """Read the runs folder and rebuild the table (marks, filter, order and cursor kept)."""
        table = self.query_one(DataTable)
        current = self.highlighted()
        runs = self.all_runs()
        self.marked &= {run.path for run in runs}
        words = self.query_text.lower().split()
        shown = []
        for run in runs:
            cells = summary_cells(run, run.path in self.marked, self.config_of(run))
            if all(word in " ".join(cells).lower() for word in words):
                shown.append(run)
        if self.order != SORTS[0]:
            shown.sort(key=lambda run: sort_key(self.order, run))
        self.runs = shown
        table.clear()
        for run in self.runs:
            cells = summary_cells(run, run.path in self.marked, self.config_of(run))
            table.add_row(*cells, key=str(run.path))
        self._say_where(len(runs))
        if current is not None:
            paths = [run.path for run in self.runs]
            if current.path in paths:
                table.move_cursor(row=paths.index(current.path), animate=False)
        self._show_detail()

    def _say_where(self, total: int | None = None) -> None:
        """The line above the table: how many runs, where, the filter, the order, the marks."""
        total = len(self.runs) if total is None else total
        count = f"{total} run{'s' if total != 1 else ''} in {self.app.runs_dir}"
        if self.query_text:
            count += f" · {len(self.runs)} shown"
        self.query_one("#runs-where", Static).update(
            f"{count} · sorted by {self.order} (s) · marked: {len(self.marked)} (␣) · "
            "u: settings to setup"
        )

    def highlighted(self) -> RunSummary | None:
        """The run under the table's cursor."""
        table = self.query_one(DataTable)
        if not self.runs or not 0 <= table.cursor_row < len(self.runs):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        """Show the highlighted run's detail."""
        self._show_detail()

    def _show_detail(self) -> None:
        """Fill the detail pane from the highlighted run."""
        run = self.highlighted()
        text = detail_text(run, self.config_of(run)) if run else "No runs here yet."
        self.query_one("#runs-detail-text", Static).update(text)

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
        self._say_where()

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

    def action_filter(self) -> None:
        """Type words to filter by (enter or escape goes back to the table)."""
        self.query_one("#runs-filter", Input).focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        """Filter as the words are typed."""
        self.query_text = event.value
        self.refresh_runs()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        """Back to the table."""
        self.query_one(DataTable).focus()

    def key_escape(self) -> None:
        """Escape in the filter goes back to the table."""
        if isinstance(self.focused, Input):
            self.query_one(DataTable).focus()

    def action_sort(self) -> None:
        """Sort by the next order."""
        self.order = SORTS[(SORTS.index(self.order) + 1) % len(SORTS)]
        self.refresh_runs()

    def action_reopen(self) -> None:
        """Put the highlighted run's settings into the setup form."""
        run = self.highlighted()
        if run is not None:
            self.app.reopen_in_setup(run.path)

    def action_delete(self) -> None:
        """Delete the highlighted run's directory, after a confirmation (not a running run)."""
        run = self.highlighted()
        if run is None:
            return
        active = self.app.run_active and self.app.run_path is not None
        if run.status == "running" or (active and run.path == self.app.run_path):
            self.notify("This run is still running: cancel it first.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            """Delete if the user said yes."""
            if not yes:
                return
            try:
                shutil.rmtree(run.path)
            except OSError as error:
                self.notify(f"Could not delete {run.path}: {error}", severity="error")
                return
            self.marked.discard(run.path)
            self._configs.pop(run.path, None)
            self.notify(f"Deleted {run.run_id}.", title="Run deleted")
            self.refresh_runs()

        self.app.push_screen(
            ConfirmDialog(
                f"Delete run {run.run_id}?",
                f"{run.path} is removed with everything in it (events, report, pruned model). "
                "This cannot be undone.",
                yes="Delete",
                no="Keep it",
            ),
            answered,
        )
