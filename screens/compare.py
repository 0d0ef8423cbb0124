"""The comparison screen: headline figures of 2+ runs, error curves overlaid, ppl vs sparsity.

Everything comes from each run's :class:`~duogpt_tui.runview.RunView` (``RunDir.view``); ``e``
exports the comparison as Markdown (``report.render_comparison``), ``x`` switches the perplexity
plot's x-axis between weight and dual sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header

from duogpt_tui import report
from duogpt_tui.formatting import duration, percent, perplexity
from duogpt_tui.runstore import COMPARISON_FILE, RunDir
from duogpt_tui.runview import RunView
from duogpt_tui.widgets.compare_plots import CompareErrorPlot, RunPoint, SparsityPerplexityPlot
from screens.base import WorkbenchScreen
from screens.dialogs import export_markdown
from solver.errors import InputError

COLUMNS = ("run", "status", "model", "method", "W", "X", "ppl dense", "ppl dense+X", "ppl", "time")
"""Column headers of the headline table."""


def run_point(name: str, view: RunView) -> RunPoint:
    """The plotted figures of one run."""
    return RunPoint(
        name=name,
        errors=[layer.error_after for layer in view.layers],
        weight_sparsity=view.weight_sparsity,
        act_sparsity=view.act_sparsity,
        ppl=view.ppl,
        ppl_dense=view.ppl_dense,
    )


def headline_cells(name: str, view: RunView) -> tuple[str, ...]:
    """The headline table's cells of one run."""
    method = view.method
    if view.pattern and view.pattern != "unstructured":
        method += f" {view.pattern}"
    return (
        name,
        view.status,
        view.model,
        method,
        percent(view.weight_sparsity),
        percent(view.act_sparsity),
        perplexity(view.ppl_dense),
        perplexity(view.ppl_dense_act),
        perplexity(view.ppl),
        duration(view.seconds, "-"),
    )


def read_view(path: Path) -> RunView:
    """A run directory's view (an empty one, with a warning, when it cannot be read)."""
    try:
        return RunDir(Path(path)).view()
    except InputError as error:
        return RunView(warnings=[str(error)])


class CompareScreen(WorkbenchScreen):
    """Side-by-side view of several runs (pushed over the runs screen; escape goes back)."""

    CSS_PATH = "compare.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("x", "toggle_axis", "Weight/dual axis"),
        Binding("e", "export", "Export comparison"),
    ]

    def __init__(self, paths: Sequence[Path]) -> None:
        """Read the runs' events.

        Args:
            paths: the run directories, in the order to show them.
        """
        super().__init__()
        self.runs: list[tuple[str, RunView]] = [
            (Path(path).name, read_view(Path(path))) for path in paths
        ]

    def compose(self) -> ComposeResult:
        """Header, the headline table, the two plots and the footer."""
        yield Header()
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="compare-plots"):
            yield CompareErrorPlot(id="compare-errors")
            yield SparsityPerplexityPlot(id="compare-ppl")
        yield Footer()

    def on_mount(self) -> None:
        """Fill the table and the plots."""
        self.sub_title = f"comparing {len(self.runs)} runs"
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        for name, view in self.runs:
            table.add_row(*headline_cells(name, view))
        points = [run_point(name, view) for name, view in self.runs]
        self.query_one(CompareErrorPlot).show(points)
        self.query_one(SparsityPerplexityPlot).show(points)
        for name, view in self.runs:
            for warning in view.warnings:
                self.notify(f"{name}: {warning}", title="Damaged run", severity="warning")

    def action_back(self) -> None:
        """Back to the runs list."""
        self.dismiss(None)

    def action_toggle_axis(self) -> None:
        """Switch the perplexity plot between weight sparsity and dual sparsity."""
        plot = self.query_one(SparsityPerplexityPlot)
        plot.show(plot.runs, "dual" if plot.axis == "weight" else "weight")

    def action_export(self) -> None:
        """Write the comparison as Markdown to a chosen path (asks before replacing)."""
        export_markdown(
            self,
            report.render_comparison(self.runs),
            noun="comparison",
            default=self.app.runs_dir / COMPARISON_FILE,
            write=self.app.export_report,
        )
