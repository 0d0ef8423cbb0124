"""Issue 15, the workbench polished: one status model, plots that do not mislead, safe
comparisons, the runs screen's tools, discoverable keys and a layout that fits 80x24."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import Button, DataTable, Footer, Input, ProgressBar, Static

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.eventlog import EventLog
from duogpt_tui.eventtext import event_line
from duogpt_tui.runstore import RunDir
from duogpt_tui.runview import RunView
from duogpt_tui.widgets.compare_plots import SparsityPerplexityPlot
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.plot_base import integer_ticks
from duogpt_tui.widgets.progress_header import ProgressHeader
from duogpt_tui.widgets.run_plots import (
    BlockSparsityPlot,
    DensityHistogram,
    ErrorPlot,
    PerplexityPlot,
)
from screens.compare import CompareScreen
from screens.dialogs import ConfirmDialog
from screens.help import HelpScreen
from screens.run import PAGES, RunScreen
from screens.runs import RunsScreen
from screens.setup import SetupScreen
from solver import events as ev
from solver.config import RunConfig
from tests.tui.conftest import SIZE, wait_for, write_run
from tests.tui.fakes import FakeSource, scripted_events

pytestmark = pytest.mark.anyio

SMALL = (80, 24)
LARGE = (160, 48)


# --------------------------------------------------------------------------------- status model


async def test_the_final_evaluation_is_a_phase_and_a_cancel_there_ends_cancelled(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """All layers pruned, the pruned model being measured: status "evaluating", the bar not
    full and no "ETA 0"; a cancel confirmed now ends the run cancelled, not finished."""
    source = FakeSource(n_blocks=2, pause_at=-1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.event_log.final_evaluation)
        header = app.screen.query_one(ProgressHeader)
        await wait_for(pilot, lambda: header.has_class("-evaluating"))
        bar = header.query_one(ProgressBar)
        assert bar.total is None or bar.progress < bar.total
        activity = str(header.query_one("#progress-activity", Static).content)
        assert "evaluating the pruned model" in activity
        assert "ETA 0.0s" not in activity
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
        terminal = app.event_log.terminal
        assert isinstance(terminal, ev.Cancelled)
        assert "evaluation" in event_line(terminal).text
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "cancelled"


async def test_a_cancel_after_the_run_ended_says_so(make_app: Callable[..., DuoGPTApp]) -> None:
    """A yes that comes after the end is not silently ignored."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.event_log.terminal is not None and not app.run_active)
        assert app.cancel_run() is False


def test_blocks_are_numbered_from_zero_everywhere() -> None:
    """The activity line names the block as the table does (0-based), with a done count."""
    events = list(scripted_events(n_blocks=4))
    layers = [i for i, e in enumerate(events) if isinstance(e, ev.LayerSolved)]
    log = EventLog()
    log.extend(events[: layers[8] + 1])  # the second layer of block 1
    assert log.layers[-1].block == 1
    assert log.activity().startswith("block 1 (1/4 done)")
    cancelled = ev.Cancelled(block=1, reason="cancelled while pruning")
    assert event_line(cancelled).text == "cancelled while pruning (block 1)"


def test_the_eta_counts_the_final_evaluation() -> None:
    """While pruning, the ETA adds the dense evaluation's time; during the final evaluation it
    is that estimate less the time spent, and unknown (never 0) once it is overrun."""
    started = ev.RunStarted(t=0.0, n_blocks=1, n_layers=2, config={"eval_windows": 4})
    dense = ev.PerplexityMeasured(t=5.0, label="dense", ppl=10.0, seconds=5.0)
    block = ev.BlockStarted(t=5.0, block=0, n_blocks=1)
    layer = ev.LayerSolved(t=6.0, block=0, name="q")
    view = RunView.of([started, dense, block, layer])
    assert view.eta_seconds() == pytest.approx(1.0 + 5.0)
    evaluating = [*view.events, ev.LayerSolved(t=7.0, block=0, name="k")]
    view = RunView.of(
        [*evaluating, ev.Progress(t=8.0, phase="eval", done=0, total=4, label="pruned")]
    )
    assert view.final_evaluation
    view.add(ev.Progress(t=10.0, phase="eval", done=0, total=4, label="pruned"))
    assert view.eta_seconds() == pytest.approx(3.0)
    view.add(ev.Progress(t=20.0, phase="eval", done=0, total=4, label="pruned"))
    assert view.eta_seconds() is None


# --------------------------------------------------------------------------------- plots


def colors_in(lines: list[Text]) -> set[tuple[int, int, int]]:
    """The RGB colours of the cells drawn in ``lines`` (non-blank cells only)."""
    found: set[tuple[int, int, int]] = set()
    for line in lines:
        for span in line.spans:
            style = span.style
            if isinstance(style, str) or style.color is None or style.color.triplet is None:
                continue
            if line.plain[span.start : span.end].strip():
                found.add(tuple(style.color.triplet))  # type: ignore[arg-type]
    return found


@pytest.mark.parametrize("size", [LARGE, SMALL], ids=["160x48", "80x24"])
async def test_no_legend_covers_a_data_point(
    make_app: Callable[..., DuoGPTApp], size: tuple[int, int]
) -> None:
    """In the snapshot fixture, every plot's legend lies below its canvas, and every series in
    the legend has its colour on the canvas (nothing hides a whole series)."""
    app = make_app()
    async with app.run_test(size=size) as pilot:
        app.event_log.reset(scripted_events(RunConfig(proxy_every=1), n_blocks=6))
        app.log_changed.publish(None)
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        for page in range(len(PAGES)):
            await pilot.pause(0.3)
            for plot in (screen.query_one(ErrorPlot), screen.query_one(PerplexityPlot)):
                if not plot.display or plot.size.height == 0 or not plot.region.height:
                    continue
                rendered = plot.render()
                assert isinstance(rendered, Text)
                lines = rendered.split("\n")
                start, end = plot.canvas_rows
                canvas, legend = lines[start:end], lines[end:]
                assert plot.legend and len(legend) >= 1
                legend_text = " ".join(line.plain for line in legend)
                canvas_text = "\n".join(line.plain for line in canvas)
                for entry in plot.legend:
                    assert entry.label in legend_text
                    assert f" {entry.label}\n" not in canvas_text  # no legend inside the data
                if len(canvas) < 10:  # a few rows: lines of data may overlap each other
                    continue
                drawn = colors_in(canvas)
                missing = [e.label for e in plot.legend if e.color not in drawn]
                assert not missing, (type(plot).__name__, missing)
            if screen.compact and page < len(PAGES) - 1:
                await pilot.press("p")
            elif not screen.compact:
                break


def test_integer_axes_get_integer_ticks() -> None:
    """Blocks, layers and counts are ticked at whole numbers."""
    assert integer_ticks(0, 29, 6) == [0, 5, 10, 15, 20, 25]
    assert integer_ticks(0, 3, 8) == [0, 1, 2, 3]
    assert integer_ticks(0, 41, 4) == [0, 20, 40]
    assert all(isinstance(t, int) for t in integer_ticks(0.5, 7.5))


async def test_error_plot_lines_per_type_median_scale_and_series_keys(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """One line per layer type across blocks and a median; l switches log/linear; the number
    keys hide a series, 0 shows all, g hides the legend."""
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        app.event_log.reset(scripted_events(RunConfig(), n_blocks=4))
        app.log_changed.publish(None)
        await pilot.press("f3")
        await pilot.pause(0.3)
        plot = app.screen.query_one(ErrorPlot)
        assert plot.series["q"][0] == [0, 1, 2, 3]
        assert plot.median[0] == [0, 1, 2, 3]
        plot.focus()
        await pilot.press("l")
        assert plot.scale == "linear"
        await pilot.press("1")
        assert plot.hidden == {"q"}
        await pilot.pause(0.1)
        plot.render()
        assert [e.hidden for e in plot.legend][:2] == [True, False]
        await pilot.press("0", "g")
        assert plot.hidden == set() and not plot.show_legend


async def test_histogram_follows_the_selected_row(make_app: Callable[..., DuoGPTApp]) -> None:
    """Selecting a row of the layer table shows that layer's histogram; the last row follows."""
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        app.event_log.reset(scripted_events(RunConfig(), n_blocks=2))
        app.log_changed.publish(None)
        await pilot.press("f3")
        await pilot.pause(0.3)
        histogram = app.screen.query_one(DensityHistogram)
        assert histogram.layer_name == "block 1 down_proj"
        table = app.screen.query_one(LayerTable)
        table.move_cursor(row=1)
        await pilot.pause(0.2)
        assert histogram.layer_name == "block 0 k_proj"
        assert histogram.counts == [0, 1, 4, 20, 8, 2, 0, 0]
        table.move_cursor(row=table.row_count - 1)
        await pilot.pause(0.2)
        assert histogram.layer_name == "block 1 down_proj"


async def test_sparsity_bars_side_by_side(make_app: Callable[..., DuoGPTApp]) -> None:
    """Thirty blocks: each has a weight and an activation column; the block numbers are whole."""
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        app.event_log.reset(scripted_events(RunConfig(), n_blocks=30))
        app.log_changed.publish(None)
        await pilot.press("f3")
        await pilot.pause(0.3)
        plot = app.screen.query_one(BlockSparsityPlot)
        rendered = plot.render()
        assert isinstance(rendered, Text)
        colors = colors_in(rendered.split("\n")[1:-1])
        assert plot.series_palette()[0] in colors and plot.series_palette()[1] in colors
        assert "." not in rendered.split("\n")[-2]  # block numbers, no fractions


# --------------------------------------------------------------------------------- compare, runs


async def test_compare_warns_about_different_protocols(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Different models: a warning names the difference; no shared perplexity axis until yes."""
    first = write_run(runs_dir, "a", RunConfig(weight_sparsity=0.5), n_blocks=2)
    second = write_run(runs_dir, "b", RunConfig(weight_sparsity=0.7), n_blocks=2, model="other")
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.2)
        warning = str(app.screen.query_one("#compare-warning", Static).content)
        assert "model differs (#1 scripted-llama, #2 other)" in warning
        plot = app.screen.query_one(SparsityPerplexityPlot)
        assert plot.withheld
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not plot.withheld)
        plot.render()
        assert [e.label for e in plot.legend] == ["#1 W50 X50", "#2 W70 X50"]


async def test_runs_screen_filter_sort_detail_and_delete(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """/ filters, s sorts, the pane shows the highlighted run, d deletes after a yes."""
    write_run(runs_dir, "low", RunConfig(weight_sparsity=0.5), n_blocks=2)
    write_run(runs_dir, "high", RunConfig(weight_sparsity=0.7), n_blocks=2, scale=2.0)
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert "calib      sotu: 16 x 256 tokens" in str(
            screen.query_one("#runs-detail-text", Static).content
        )
        await pilot.press("slash", "7", "0", "enter")
        await pilot.pause()
        assert [run.run_id for run in screen.runs] == ["high"]
        screen.query_one(Input).value = ""
        await pilot.pause()
        while screen.order != "ppl":
            await pilot.press("s")
        assert [run.run_id for run in screen.runs] == ["low", "high"]
        screen.query_one(DataTable).move_cursor(row=0)
        await pilot.pause()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        assert (runs_dir / "low").is_dir()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not (runs_dir / "low").exists())
        assert [run.run_id for run in screen.runs] == ["high"]


async def test_run_dir_from_the_command_line_is_listed_and_fills_setup(
    runs_dir: Path, tmp_path: Path
) -> None:
    """``duogpt-tui RUN_DIR`` outside the runs folder: listed on the runs screen; setup starts
    from its settings; u on the runs screen puts them back."""
    from duogpt_tui.app import make_app as app_factory
    from tests.tui.fakes import CATALOG

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_run(elsewhere, "mine", RunConfig(weight_sparsity=0.6, nsamples=8), n_blocks=2)
    app = app_factory([str(path), "--runs-dir", str(runs_dir)], catalog=CATALOG)
    assert app.initial_config.weight_sparsity == 0.6
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert "mine" in str(app.screen.sub_title)
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert [run.run_id for run in screen.runs] == ["mine"]
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen))
        await pilot.pause(0.2)
        assert app.screen.query_one("#nsamples", Input).value == "8"


# --------------------------------------------------------------------------------- keys


async def test_question_mark_types_in_inputs_and_opens_help_elsewhere(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """`?` in a text field is a character; outside, help (which scrolls at 80x24)."""
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        field = app.screen.query_one("#seed", Input)
        field.focus()
        await pilot.press("end", "question_mark")
        assert field.value.endswith("?")
        await pilot.press("f5")
        await pilot.pause()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        box = app.screen.query_one("#help-scroll")
        assert box.max_scroll_y > 0
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: box.scroll_y > 0)


async def test_the_palette_offers_the_actions(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Start, Export, Compare, Open run and Reopen in setup are commands; Cancel while running."""
    write_run(runs_dir, "done", RunConfig(), n_blocks=2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.open_run(runs_dir / "done")
        await pilot.pause()
        titles = {command.title for command in app.get_system_commands(app.screen)}
        expected = {"Start run", "Export report", "Compare runs", "Reopen in setup"}
        assert expected <= titles and "Open run done" in titles


async def test_start_button_and_a_second_start_explained(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """The Start button starts; starting again while running says why not, on the form."""
    source = FakeSource(n_blocks=2, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#start-button", Button).press()
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("ctrl+r")
        await pilot.pause()
        line = str(app.screen.query_one("#start-error", Static).content)
        assert "a run is in progress" in line and "one run at a time" in line
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
    assert len(list(runs_dir.iterdir())) == 1


async def test_a_sparsity_as_a_percentage(make_app: Callable[..., DuoGPTApp]) -> None:
    """`50%` is 0.5; evaluation windows 0 says that it skips the evaluation."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        screen.query_one("#weight_sparsity", Input).value = "60%"
        screen.query_one("#eval_windows", Input).value = "0"
        await pilot.pause()
        config = screen.revalidate()
        assert config is not None and config.weight_sparsity == pytest.approx(0.6)
        reason = str(screen.query_one("#reason-eval_windows", Static).content)
        assert "skips the evaluation" in reason


# --------------------------------------------------------------------------------- 80x24


@pytest.mark.parametrize("mode", ["setup", "run", "report", "runs"])
async def test_the_footer_shows_every_screen_key_at_80x24(
    make_app: Callable[..., DuoGPTApp], mode: str
) -> None:
    """At 80 columns the footer ends before the edge: every F-key is there."""
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        app.event_log.reset(scripted_events(RunConfig(), n_blocks=2))
        app.log_changed.publish(None)
        await pilot.press({"setup": "f2", "run": "f3", "report": "f4", "runs": "f5"}[mode])
        await pilot.pause(0.3)
        footer = app.screen.query_one(Footer)
        keys = list(footer.query("FooterKey"))
        assert keys and all(key.region.right <= SMALL[0] for key in keys)
        shown = " ".join(str(key.render()) for key in keys)
        for fkey in ("f2", "f3", "f4", "f5"):
            assert fkey in shown


async def test_compare_keeps_its_perplexity_columns_at_80x24(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """The perplexity columns come first, so a narrow table still shows them."""
    first = write_run(runs_dir, "a", RunConfig(weight_sparsity=0.5), n_blocks=2)
    second = write_run(runs_dir, "b", RunConfig(weight_sparsity=0.7), n_blocks=2)
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.2)
        table = app.screen.query_one(DataTable)
        widths = 0
        for column in table.ordered_columns[:4]:
            widths += column.get_render_width(table)
        assert [c.label.plain for c in table.ordered_columns[1:4]] == [
            "ppl",
            "ppl dense",
            "ppl dense+X",
        ]
        assert widths <= SMALL[0]
