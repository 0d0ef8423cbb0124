"""The comparison screen: headline figures of 2+ runs, error curves overlaid, ppl vs sparsity.

Everything comes from each run's :class:`~duogpt_tui.runview.RunView` (``RunDir.view``). Runs are
numbered (``#1``, ``#2``...) in the table and the legends, which use short labels. When the runs
differ in model or evaluation protocol (text, windows, tokens per window), a warning above the
table names the differences, and their perplexities are not drawn on one axis until the user
confirms (``a``). ``e`` exports the comparison as Markdown (``report.render_comparison``), ``x``
switches the perplexity plot's x-axis between weight and dual sparsity, and, when at least one
run's decode speed was measured (``duogpt speed RUN_DIR``), the measured dual-sparse speedup
(the latest measurement of each run; the runs never measured are named as not drawn, and the
table gets a speedup column). The perplexity columns come first, so a narrow terminal keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static

from duogpt_tui import report
from duogpt_tui.formatting import duration, number, percent, perplexity
from duogpt_tui.runstore import COMPARISON_FILE, RunDir
from duogpt_tui.runview import RunView
from duogpt_tui.widgets.compare_plots import CompareErrorPlot, RunPoint, SparsityPerplexityPlot
from screens.base import WorkbenchScreen
from screens.dialogs import ConfirmDialog, export_markdown
from solver.errors import InputError

COLUMNS = (
    "#",
    "ppl",
    "ppl dense",
    "ppl dense+X",
    "W",
    "X",
    "status",
    "model",
    "method",
    "eval",
    "time",
    "run",
)
"""Column headers of the headline table (the perplexities first: a narrow terminal keeps them)."""

NARROW = 120
"""Below this many columns the two plots are stacked."""


def short_label(index: int, view: RunView) -> str:
    """A run's legend label: its number and what sets it apart, e.g. ``#1 W50 X50``."""
    w = view.target_weight_sparsity
    x = view.target_act_sparsity
    parts = [f"#{index + 1}"]
    if view.method and view.method != "duogpt":
        parts.append(view.method)
    if view.pattern and view.pattern != "unstructured":
        parts.append(view.pattern)
    elif w is not None:
        parts.append(f"W{w * 100:.0f}")
    if x is not None:
        parts.append(f"X{x * 100:.0f}")
    return " ".join(parts)


def run_point(name: str, view: RunView) -> RunPoint:
    """The plotted figures of one run."""
    return RunPoint(
        name=name,
        errors=[layer.error_after for layer in view.layers],
        weight_sparsity=view.weight_sparsity,
        act_sparsity=view.act_sparsity,
        ppl=view.ppl,
        ppl_dense=view.ppl_dense,
        speedup=view.speedup_dual,
    )


def eval_protocol(view: RunView) -> str:
    """How a run measured perplexity: ``text WxS`` (from its events, else its config)."""
    measured = view.perplexity("pruned") or view.perplexity("dense")
    if measured is not None:
        return f"{measured.text} {measured.windows}x{measured.seqlen}"
    config = view.config
    if not config:
        return "-"
    if config.get("eval_windows") == 0:
        return "skipped"
    seqlen = config.get("eval_seqlen") or config.get("seqlen", "?")
    return f"{config.get('eval', '?')} {config.get('eval_windows', '?')}x{seqlen}"


def task_names(views: Sequence[RunView]) -> list[str]:
    """The zero-shot tasks any of the runs scored on its pruned model, sorted."""
    names = set()
    for view in views:
        scored = view.tasks("pruned")
        if scored is not None:
            names |= set(scored.tasks)
    return sorted(names)


SPEED_COLUMN = "dual x"
"""The column of the measured dual-sparse decode speedup (when a run was measured)."""


def columns(tasks: Sequence[str], speed: bool = False) -> tuple[str, ...]:
    """The headline table's columns: :data:`COLUMNS` with one accuracy column per task after
    the sparsities, then (``speed``) the measured speedup's."""
    at = COLUMNS.index("status")
    extra = (SPEED_COLUMN,) if speed else ()
    return (*COLUMNS[:at], *(f"acc {name}" for name in tasks), *extra, *COLUMNS[at:])


def headline_cells(
    index: int, name: str, view: RunView, tasks: Sequence[str] = (), speed: bool = False
) -> tuple[str, ...]:
    """The headline table's cells of one run (``tasks``: the accuracy columns, pruned model;
    ``speed``: the measured speedup column)."""
    scored = view.tasks("pruned")
    accuracies = tuple(
        percent((scored.tasks.get(task) or {}).get("acc") if scored else None) for task in tasks
    )
    speedup = view.speedup_dual
    extra = (f"{number(speedup)}x" if speedup is not None else "-",) if speed else ()
    method = view.method
    if view.pattern and view.pattern != "unstructured":
        method += f" {view.pattern}"
    return (
        f"#{index + 1}",
        perplexity(view.ppl),
        perplexity(view.ppl_dense),
        perplexity(view.ppl_dense_act),
        percent(view.weight_sparsity),
        percent(view.act_sparsity),
        *accuracies,
        *extra,
        view.status,
        view.model,
        method,
        eval_protocol(view),
        duration(view.seconds, "-"),
        name,
    )


def protocol_differences(runs: Sequence[tuple[str, RunView]]) -> list[str]:
    """What makes the runs' perplexities incomparable: the model or the evaluation protocol.

    Returns:
        One line per aspect that differs, naming each run's value (empty when they agree).
    """
    aspects = {
        "model": lambda view: view.model or "-",
        "evaluation": eval_protocol,
    }
    lines = []
    for aspect, value in aspects.items():
        values = [value(view) for _, view in runs]
        if len(set(values)) > 1:
            each = ", ".join(f"#{i + 1} {v}" for i, v in enumerate(values))
            lines.append(f"{aspect} differs ({each})")
    return lines


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
        Binding("x", "toggle_axis", "W/dual axis"),
        Binding(
            "x",
            "cycle_axis",
            "W/dual/speed axis",
            tooltip="x axis: weight sparsity, dual sparsity, measured dual-sparse speedup",
        ),
        Binding("a", "draw_anyway", "Draw all", tooltip="Draw runs of different protocols"),
        Binding("e", "export", "Export"),
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
        self.differences = protocol_differences(self.runs)
        self.confirmed = False
        self.measured = any(view.decode_speed is not None for _, view in self.runs)

    def compose(self) -> ComposeResult:
        """Header, the protocol warning, the headline table, the two plots and the footer."""
        yield Header()
        yield Static("", id="compare-warning", markup=False)
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="compare-plots"):
            yield CompareErrorPlot(id="compare-errors")
            yield SparsityPerplexityPlot(id="compare-ppl")
        yield Footer()

    def on_mount(self) -> None:
        """Fill the warning, the table and the plots."""
        self.sub_title = f"comparing {len(self.runs)} runs"
        warning = self.query_one("#compare-warning", Static)
        if self.differences:
            warning.update(
                "⚠ not comparable: "
                + "; ".join(self.differences)
                + ". Their perplexities are not drawn on one axis (a: draw them anyway)."
            )
        warning.set_class(not self.differences, "-empty")
        table = self.query_one(DataTable)
        tasks = task_names([view for _, view in self.runs])
        table.add_columns(*columns(tasks, self.measured))
        for index, (name, view) in enumerate(self.runs):
            table.add_row(*headline_cells(index, name, view, tasks, self.measured))
        points = self.points()
        self.query_one(CompareErrorPlot).show(points)
        self.query_one(SparsityPerplexityPlot).show(points, withheld=self.withheld())
        for name, view in self.runs:
            for problem in view.warnings:
                self.notify(f"{name}: {problem}", title="Damaged run", severity="warning")

    def on_resize(self, event: events.Resize) -> None:
        """Stack the plots on a narrow terminal."""
        self.set_class(event.size.width < NARROW, "-narrow")

    def points(self) -> list[RunPoint]:
        """The runs' plotted figures, with their short labels."""
        return [run_point(short_label(i, view), view) for i, (_, view) in enumerate(self.runs)]

    def withheld(self) -> str:
        """Why the perplexities are not drawn (empty when they are)."""
        if self.differences and not self.confirmed:
            return "different models or protocols (a: draw anyway)"
        return ""

    def action_back(self) -> None:
        """Back to the runs list."""
        self.dismiss(None)

    def axes(self) -> list[str]:
        """The perplexity plot's x-axis choices: weight and dual sparsity, and the measured
        speedup when at least one run was measured."""
        return ["weight", "dual", *(["speed"] if self.measured else [])]

    def action_toggle_axis(self) -> None:
        """Switch the perplexity plot to its next x axis (:meth:`axes`)."""
        plot = self.query_one(SparsityPerplexityPlot)
        axes = self.axes()
        at = axes.index(plot.axis) if plot.axis in axes else -1
        plot.show(plot.runs, axes[(at + 1) % len(axes)])

    def action_cycle_axis(self) -> None:
        """The same key when the speedup axis is offered (its own footer label)."""
        self.action_toggle_axis()

    def action_draw_anyway(self) -> None:
        """Draw perplexities of runs with different protocols on one axis, once confirmed."""
        if not self.differences or self.confirmed:
            return

        def answered(yes: bool | None) -> None:
            """Draw them if the user said yes."""
            if yes:
                self.confirmed = True
                plot = self.query_one(SparsityPerplexityPlot)
                plot.show(plot.runs, withheld="")

        self.app.push_screen(
            ConfirmDialog(
                "Draw perplexities of different protocols on one axis?",
                "; ".join(self.differences).capitalize()
                + ". Their perplexities measure different things: compare them with care.",
                yes="Draw them",
                no="Keep apart",
            ),
            answered,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Drawing all is offered only when the protocols differ."""
        if action == "draw_anyway":
            return bool(self.differences) and not self.confirmed
        if action in ("toggle_axis", "cycle_axis"):  # one key, the label says its axes
            return self.measured == (action == "cycle_axis")
        return True

    def action_export(self) -> None:
        """Write the comparison as Markdown to a chosen path (asks before replacing)."""
        export_markdown(
            self,
            report.render_comparison(self.runs),
            noun="comparison",
            default=self.app.runs_dir / COMPARISON_FILE,
            write=self.app.export_report,
        )
