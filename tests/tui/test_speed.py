"""A run's measured decode speed (``duogpt speed RUN_DIR``) in the TUI: the report screen's
"Measured decode speed" section, and the compare screen's measured-speedup axis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import DataTable

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.compare_plots import SparsityPerplexityPlot
from duogpt_tui.widgets.report_view import ReportView
from screens.compare import SPEED_COLUMN, CompareScreen
from screens.report import ReportScreen
from screens.run import RunScreen
from solver.config import RunConfig
from tests.report import scripted
from tests.tui.conftest import SIZE, wait_for, write_run

pytestmark = pytest.mark.anyio


def measured_run(root: Path, name: str, config: RunConfig, speedup: float) -> Path:
    """A finished scripted run with a decode-speed measurement recorded as the CLI does."""
    path = write_run(root, name, config, n_blocks=2)
    run_dir = RunDir.open(path)
    run_dir.record(scripted.speed_measured(t=run_dir.view().elapsed, speedup_dual=speedup))
    return path


def canvas_points(plot: SparsityPerplexityPlot) -> int:
    """The points drawn on the plot's canvas (the legend's marks left out)."""
    lines = plot.render().plain.split("\n")  # type: ignore[union-attr]
    start, end = plot.canvas_rows
    return sum(line.count("●") for line in lines[start:end])


async def test_the_report_screen_shows_the_measured_speed(runs_dir: Path) -> None:
    """A reopened run's report has the section with the recorded figures."""
    from duogpt_tui.app import make_app as app_factory
    from tests.tui.fakes import CATALOG

    path = measured_run(runs_dir, "measured", RunConfig(weight_sparsity=0.5), 1.8)
    app = app_factory([str(path), "--runs-dir", str(runs_dir)], catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await wait_for(pilot, lambda: "## Measured decode speed" in screen.text)
        view = screen.query_one(ReportView)
        await wait_for(pilot, lambda: any("Measured decode speed" in s.text for s in view.lines))
        shown = "\n".join(line.text for line in view.lines)
        assert "dual-sparse" in shown and "180.0" in shown and "1.80x" in shown
        assert "2.5 2.40x [2.90x]" in shown and "backend cpp" in shown


async def test_compare_cycles_to_the_measured_speedup(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """x: weight -> dual -> measured speedup -> weight; the run never measured is not drawn."""
    first = measured_run(runs_dir, "measured", RunConfig(weight_sparsity=0.5), 1.8)
    second = write_run(runs_dir, "plain", RunConfig(weight_sparsity=0.7), n_blocks=2, scale=2.0)
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.2)
        screen = app.screen
        assert screen.active_bindings["x"].binding.description == "W/dual/speed axis"
        table = screen.query_one(DataTable)
        at = [str(c.label) for c in table.ordered_columns].index(SPEED_COLUMN)
        assert [table.get_row_at(i)[at] for i in range(2)] == ["1.80x", "-"]
        plot = screen.query_one(SparsityPerplexityPlot)
        assert plot.axis == "weight" and canvas_points(plot) == 2
        await pilot.press("x")
        assert plot.axis == "dual"
        await pilot.press("x")
        assert plot.axis == "speed"
        assert [plot.x_of(run) for run in plot.runs] == [1.8, None]
        assert canvas_points(plot) == 1
        assert plot.heading.endswith("not drawn (never measured): #2")
        assert "speedup" in plot.heading and plot.x_end() == 2.5
        await pilot.press("x")
        assert plot.axis == "weight" and canvas_points(plot) == 2


async def test_compare_without_measurements_keeps_two_axes(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """No run measured: no speedup axis, no speedup column, the key keeps its label."""
    first = write_run(runs_dir, "a", RunConfig(weight_sparsity=0.5), n_blocks=2)
    second = write_run(runs_dir, "b", RunConfig(weight_sparsity=0.7), n_blocks=2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.2)
        screen = app.screen
        assert screen.active_bindings["x"].binding.description == "W/dual axis"
        columns = [str(c.label) for c in screen.query_one(DataTable).ordered_columns]
        assert SPEED_COLUMN not in columns
        plot = screen.query_one(SparsityPerplexityPlot)
        await pilot.press("x", "x")
        assert plot.axis == "weight"
