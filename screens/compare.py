"""The comparison screen: headline figures of 2+ runs, error curves overlaid, ppl vs sparsity.

Everything comes from the runs' ``events.jsonl`` (``runstore.read_events`` and ``summarize``);
``e`` exports the comparison as Markdown (``report.render_comparison``), ``x`` switches the
perplexity plot's x-axis between weight and dual sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from duogpt_tui import report
from duogpt_tui.runstore import read_events, summarize
from duogpt_tui.widgets.compare_plots import CompareErrorPlot, RunPoint, SparsityPerplexityPlot
from screens.dialogs import ConfirmDialog, PathDialog
from solver.errors import InputError
from solver.events import Event, LayerSolved

if TYPE_CHECKING:
    from duogpt_tui.app import DuoGPTApp

COLUMNS = ("run", "status", "model", "method", "W", "X", "ppl dense", "ppl dense+X", "ppl", "time")
"""Column headers of the headline table."""


def _fraction(value: float | None) -> str:
    """``0.5`` -> ``50.0%``; None -> ``-``."""
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None, digits: int = 2) -> str:
    """A number with fixed decimals, or ``-``."""
    return "-" if value is None else f"{value:.{digits}f}"


def run_point(name: str, events: Sequence[Event]) -> RunPoint:
    """The plotted figures of one run."""
    head = summarize(events)
    return RunPoint(
        name=name,
        errors=[e.error_after for e in events if isinstance(e, LayerSolved)],
        weight_sparsity=head.get("weight_sparsity"),
        act_sparsity=head.get("act_sparsity"),
        ppl=head.get("ppl"),
        ppl_dense=head.get("ppl_dense"),
    )


def headline_cells(name: str, events: Sequence[Event]) -> tuple[str, ...]:
    """The headline table's cells of one run."""
    head = summarize(events)
    pattern = str(head.get("pattern") or "")
    method = str(head.get("method") or "")
    if pattern and pattern != "unstructured":
        method += f" {pattern}"
    seconds = head.get("seconds")
    return (
        name,
        str(head.get("status", "")),
        str(head.get("model", "")),
        method,
        _fraction(head.get("weight_sparsity")),
        _fraction(head.get("act_sparsity")),
        _number(head.get("ppl_dense")),
        _number(head.get("ppl_dense_act")),
        _number(head.get("ppl")),
        "-" if seconds is None else f"{seconds:.1f}s",
    )


class CompareScreen(Screen[None]):
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
        self.runs: list[tuple[str, list[Event]]] = []
        for path in paths:
            try:
                events = read_events(Path(path) / "events.jsonl")
            except InputError:
                events = []
            self.runs.append((Path(path).name, events))

    @property
    def duo(self) -> DuoGPTApp:
        """The workbench App (typed)."""
        return self.app  # type: ignore[return-value]

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
        for name, events in self.runs:
            table.add_row(*headline_cells(name, events))
        points = [run_point(name, events) for name, events in self.runs]
        self.query_one(CompareErrorPlot).show(points)
        self.query_one(SparsityPerplexityPlot).show(points)

    def action_back(self) -> None:
        """Back to the runs list."""
        self.dismiss(None)

    def action_toggle_axis(self) -> None:
        """Switch the perplexity plot between weight sparsity and dual sparsity."""
        plot = self.query_one(SparsityPerplexityPlot)
        plot.show(plot.runs, "dual" if plot.axis == "weight" else "weight")

    def action_export(self) -> None:
        """Write the comparison as Markdown to a chosen path (asks before replacing)."""
        text = report.render_comparison(self.runs)
        default = self.duo.runs_dir / "comparison.md"

        def chosen(path: Path | None) -> None:
            """Write to the chosen path, asking first if it exists."""
            if path is None:
                return
            if path.exists():
                self.app.push_screen(
                    ConfirmDialog("Replace the file?", f"{path} already exists. Replace it?"),
                    lambda yes: self._write(text, path) if yes else None,
                )
            else:
                self._write(text, path)

        self.app.push_screen(PathDialog("Export the comparison to", default), chosen)

    def _write(self, text: str, path: Path) -> None:
        """Write and say where."""
        try:
            written = self.duo.export_report(text, path)
        except InputError as error:
            self.notify(str(error), title="Export failed", severity="error")
            return
        self.notify(f"Comparison written to {written}", title="Exported")
