"""Issue 15, the points that ``test_polish.py`` leaves to other files or did not show: the
table's key, the report's scroll and speed-up table, the palette found by typing, the setup form
and the compare screen at 80x24, y-axis labels and whole counts, per-run dense references, a
clear focus style, and a cancel at the very end of a real run."""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Footer, Input, Label, Static

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runner import pipeline_source
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.compare_plots import CompareErrorPlot, SparsityPerplexityPlot
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.plot_base import ThemedPlot
from duogpt_tui.widgets.report_view import ReportView
from duogpt_tui.widgets.run_plots import DensityHistogram
from screens.compare import CompareScreen
from screens.dialogs import ConfirmDialog
from screens.help import HELP_TEXT
from screens.report import ReportScreen
from screens.run import TABLE_KEY
from screens.runs import RunsScreen
from screens.setup import SetupScreen
from solver import events as ev
from solver.config import RunConfig
from tests.report import scripted
from tests.tui.conftest import SIZE, wait_for, write_run
from tests.tui.fakes import CATALOG, FakeSource, scripted_events
from tests.tui.test_polish import colors_in

pytestmark = pytest.mark.anyio

SMALL = (80, 24)
LARGE = (160, 48)


def show_scripted(app: DuoGPTApp, events: list[ev.Event]) -> None:
    """Replace the App's log with ``events`` (as if a run were reopened)."""
    app.event_log.reset(events)
    app.log_changed.publish(None)


# --------------------------------------------------------------------------------- smaller points


async def test_the_table_columns_are_explained_and_kept_at_80x24(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """The line above the table says what W/X, before/after and secs are, and that after is
    larger because pruning adds error; help says it at length; at 80x24 every column and the
    whole key fit."""
    assert "before → after pruning (pruning adds it)" in TABLE_KEY and "secs: solve" in TABLE_KEY
    assert "after is\nlarger: that is the damage pruning does" in HELP_TEXT
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        show_scripted(app, list(scripted_events(RunConfig(), n_blocks=2)))
        await pilot.press("f3")
        await pilot.pause(0.3)
        bottom = app.screen.query_one("#bottom")
        assert bottom.border_title == TABLE_KEY and len(TABLE_KEY) <= SMALL[0] - 4
        table = app.screen.query_one(LayerTable)
        labels = [column.label.plain for column in table.ordered_columns]
        assert labels[-3:] == ["before", "after", "secs"]
        widths = sum(column.get_render_width(table) for column in table.ordered_columns)
        assert widths <= table.scrollable_content_region.width


@pytest.mark.parametrize("where", ["shown", "hidden"])
async def test_the_report_of_another_run_starts_at_its_top(
    make_app: Callable[..., DuoGPTApp], where: str
) -> None:
    """Scrolled down in one run's report, then another run is shown (while the report screen
    is on screen, or while it is not): the new report starts at its first line."""
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        show_scripted(app, list(scripted_events(RunConfig(), n_blocks=6)))
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        view = screen.query_one(ReportView)
        await wait_for(pilot, lambda: len(view.lines) > SMALL[1])
        view.scroll_end(animate=False)
        await wait_for(pilot, lambda: view.scroll_y > 0)
        if where == "hidden":
            await pilot.press("f3")
            await pilot.pause()
        first = screen.text
        show_scripted(app, list(scripted_events(RunConfig(weight_sparsity=0.7), n_blocks=5)))
        await pilot.press("f4")
        await wait_for(pilot, lambda: screen.text not in ("", first))
        await pilot.pause(0.1)
        assert view.scroll_y == 0


@pytest.mark.parametrize("size", [LARGE, SIZE], ids=["160x48", "80x24"])
async def test_the_speedup_tables_do_not_wrap_and_carry_si_units(
    make_app: Callable[..., DuoGPTApp], size: tuple[int, int]
) -> None:
    """At 160x48 and at 80x24 each row of the decode speed-up tables is one line: the value and
    its ratio together, in the kB and kFLOP each table names (no MFLOP fractions)."""
    app = make_app()
    async with app.run_test(size=size) as pilot:
        show_scripted(app, scripted.finished_run())
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        view = screen.query_one(ReportView)
        await wait_for(pilot, lambda: "speedup bounds" in screen.text and bool(view.lines))
        shown = [line.text.rstrip() for line in view.lines]
        start = shown.index("Estimated decode speedup bounds")
        section = shown[start : start + 40]
        rows = [line for line in section if line.lstrip().startswith(("q ", "down ", "all "))]
        assert len(rows) == 6, section  # 3 rows in each of the two tables, none wrapped
        assert all(line.count("x)") == 3 for line in rows), rows
        assert all(line.rstrip().endswith("x)") for line in rows)
        assert any(line.rstrip().endswith("8.19 (4.00x)") for line in rows), rows
        assert any("FLOPs, in kFLOP" in line for line in section), section
        assert not any("MFLOP" in line or "0.00" in line.split("(")[0] for line in section)


async def test_setup_percent_and_eval_windows_zero_as_typed(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """Typing ``50%`` gives 0.5 with no complaint; typing 0 windows says it skips the
    evaluation (and still starts)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        for name, typed in (("weight_sparsity", "50%"), ("eval_windows", "0")):
            field = screen.query_one(f"#{name}", Input)
            field.focus()
            await pilot.press("ctrl+a", "ctrl+k", *typed)  # start, delete to the end, type
            await pilot.pause()
            assert field.value == typed
        config = screen.revalidate()
        assert config is not None
        assert config.weight_sparsity == pytest.approx(0.5) and config.eval_windows == 0
        assert not screen.query_one("#weight_sparsity", Input).has_class("-bad")
        reason = str(screen.query_one("#reason-eval_windows", Static).content)
        assert "skips the evaluation" in reason


async def test_the_palette_finds_each_action_by_typing(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """ctrl+p, then a word: start, cancel (while a run goes on), export, compare, open run
    and reopen each find their command; choosing Cancel asks first."""
    write_run(runs_dir, "done", RunConfig(), n_blocks=2)
    source = FakeSource(n_blocks=2, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        for word, title in (
            ("start", "Start run"),
            ("export", "Export report"),
            ("compare", "Compare runs"),
            ("open run", "Open run done"),
            ("reopen", "Reopen in setup"),
            ("cancel", "Cancel run"),
        ):
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*word)
            results = app.screen.query_one(CommandList)

            def found(results: Any = results, title: str = title) -> bool:
                """Whether ``title`` is among the hits (the first one for cancel, chosen next)."""
                prompts = [
                    getattr(prompt, "plain", str(prompt)).split("\n")[0]
                    for prompt in (
                        results.get_option_at_index(i).prompt for i in range(results.option_count)
                    )
                ]
                return bool(prompts) and title in (
                    prompts[:1] if title == "Cancel run" else prompts
                )

            await wait_for(pilot, found)
            if word != "cancel":
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
        assert isinstance(app.event_log.terminal, ev.Cancelled)


# --------------------------------------------------------------------------------- 80x24


async def test_setup_at_80x24_keeps_browse_buttons_descriptions_and_start(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """The narrow form keeps the browse button of each source row on screen, describes the
    focused field on its own line, and shows the Start button."""
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        screen = app.screen
        assert isinstance(screen, SetupScreen) and screen.has_class("-compact")
        for name in ("model", "calib", "eval"):
            button = screen.query_one(f"#browse-{name}")
            assert button.region.width > 0 and button.region.right <= SMALL[0], name
        screen.query_one("#model-choice").focus()
        await pilot.pause()
        described = str(screen.query_one("#field-help", Static).content)
        assert described.startswith("Model: ") and len(described) > len("Model: ") + 20
        screen.query_one("#alpha", Input).focus()
        await pilot.pause()
        assert str(screen.query_one("#field-help", Static).content).startswith("Alpha")
        start = screen.query_one("#start-button")
        assert start.region.height == 1 and start.region.bottom <= SMALL[1] - 1


@pytest.mark.parametrize("size", [LARGE, SMALL], ids=["160x48", "80x24"])
async def test_compare_keeps_footer_keys_and_both_legends_off_the_data(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path, size: tuple[int, int]
) -> None:
    """The compare screen (at 80x24 too): its footer keys fit, both plots keep their legend
    below the data with the short labels, and every run's series is drawn (none hidden)."""
    first = write_run(runs_dir, "w50-x50", RunConfig(weight_sparsity=0.5), n_blocks=4)
    second = write_run(runs_dir, "w70-x25", RunConfig(weight_sparsity=0.7), n_blocks=4, scale=2.0)
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.3)
        footer = app.screen.query_one(Footer)
        await wait_for(pilot, lambda: bool(footer.query("FooterKey")) and footer.region.width > 0)
        keys = list(footer.query("FooterKey"))
        assert all(key.region.right <= size[0] for key in keys)
        shown = " ".join(str(key.render()) for key in keys)
        for key in ("esc", "e", "f2", "f3", "f4", "f5"):
            assert key in shown.split(), (key, shown)
        for plot in (
            app.screen.query_one(CompareErrorPlot),
            app.screen.query_one(SparsityPerplexityPlot),
        ):
            plot.replot()
            rendered = plot.render()
            assert isinstance(rendered, Text)
            lines = rendered.split("\n")
            start, end = plot.canvas_rows
            legend = " ".join(line.plain for line in lines[end:])
            assert "#1 W50 X50" in legend and "#2 W70 X50" in legend
            canvas = "\n".join(line.plain for line in lines[start:end])
            assert "#1 W50" not in canvas and "#2 W70" not in canvas
            drawn = colors_in(lines[start:end])
            assert all(entry.color in drawn for entry in plot.legend), type(plot).__name__


# --------------------------------------------------------------------------------- plots


async def test_every_plot_labels_its_y_axis_and_counts_are_whole(
    make_app: Callable[..., DuoGPTApp],
) -> None:
    """Each run plot's head line names its y axis (``↑ ...``); the histogram's counts are
    whole numbers; every plot's series have distinct colours (dense+act and proxy too)."""
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        show_scripted(app, list(scripted_events(RunConfig(proxy_every=1), n_blocks=6)))
        await pilot.press("f3")
        await pilot.pause(0.3)
        plots = list(app.screen.query(ThemedPlot))
        await wait_for(pilot, lambda: all(plot.size.height > 5 for plot in plots))
        for plot in plots:
            rendered = plot.render()
            assert isinstance(rendered, Text)
            lines = rendered.split("\n")
            assert plot.ylabel and lines[0].plain.startswith(f"↑ {plot.ylabel}"), plot.id
            colors = [entry.color for entry in plot.legend]
            assert len(set(colors)) == len(colors), (plot.id, plot.legend)
        histogram = app.screen.query_one(DensityHistogram)
        rendered = histogram.render()
        assert isinstance(rendered, Text)
        start, end = histogram.canvas_rows
        rows = rendered.split("\n")[start:end]
        numbers = [line.plain.split("┤")[0].strip() for line in rows if "┤" in line.plain]
        assert numbers and all(tick.isdigit() for tick in numbers), numbers


async def test_compare_draws_each_runs_own_dense_reference(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Two runs with different dense perplexities: two reference lines, each in its run's
    colour, both named under the axis."""

    def with_dense(ppl: float) -> list[ev.Event]:
        """The scripted run with its dense perplexity set to ``ppl``."""
        events = list(scripted_events(RunConfig(), n_blocks=2))
        return [
            ev.PerplexityMeasured(**{**vars(e), "ppl": ppl})
            if isinstance(e, ev.PerplexityMeasured) and e.label == "dense"
            else e
            for e in events
        ]

    first = write_run(runs_dir, "a", RunConfig(), with_dense(40.0))
    second = write_run(runs_dir, "b", RunConfig(), with_dense(50.0))
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.3)
        plot = app.screen.query_one(SparsityPerplexityPlot)
        assert not plot.withheld
        rendered = plot.render()
        assert isinstance(rendered, Text)
        lines = rendered.split("\n")
        start, end = plot.canvas_rows
        assert "lines: dense 40.0, 50.0" in "\n".join(line.plain for line in lines[end - 2 :])
        rows_of: dict[tuple[int, int, int], set[int]] = {}
        for row, line in enumerate(lines[start:end]):
            for color in colors_in([line]):
                rows_of.setdefault(color, set()).add(row)
        (one, two) = (entry.color for entry in plot.legend)
        assert rows_of.get(one) and rows_of.get(two) and rows_of[one] != rows_of[two]


async def test_the_focused_field_is_clearly_marked(make_app: Callable[..., DuoGPTApp]) -> None:
    """The focused row's label is bold in the accent colour and its field takes a background
    that differs from an unfocused field's."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        seed, alpha = screen.query_one("#seed", Input), screen.query_one("#alpha", Input)
        seed.focus()
        await pilot.pause()
        label_of = {
            name: screen.query_one(f"#row-{name}").query_one(".field-label", Label)
            for name in ("seed", "alpha")
        }
        focused, other = label_of["seed"].rich_style, label_of["alpha"].rich_style
        assert focused.bold and not other.bold and focused.color != other.color
        assert seed.styles.background != alpha.styles.background
        assert seed.styles.background.a > 0


# --------------------------------------------------------------------------------- status model


@pytest.mark.parametrize("moment", ["last layer", "final evaluation"])
async def test_a_cancel_at_the_end_of_a_real_run_ends_it_cancelled(
    runs_dir: Path, moment: str
) -> None:
    """The real solver on tiny-random: a cancel confirmed while the last layer is pruned (no
    evaluation after it) or when the final evaluation starts ends the run "cancelled"."""
    app: DuoGPTApp | None = None

    def source(
        config: RunConfig, cancel: Any = None, workdir: Path | None = None
    ) -> Generator[ev.Event, None, object]:
        """The pipeline, with the user's cancel at ``moment``: right after the last layer was
        handed on (the solver has checked for a cancel before it), or when the final
        evaluation starts. It comes from the worker thread, as a key press's would."""
        events = pipeline_source()(config, cancel, workdir)
        n_layers, layers = -1, 0
        try:
            while True:
                event = next(events)
                yield event
                if isinstance(event, ev.RunStarted):
                    n_layers = event.n_layers
                layers += isinstance(event, ev.LayerSolved)
                last_layer = isinstance(event, ev.LayerSolved) and layers == n_layers
                evaluating = (
                    isinstance(event, ev.Progress)
                    and event.phase == "eval"
                    and event.label == "pruned"
                )
                if (last_layer if moment == "last layer" else evaluating) and app is not None:
                    app.call_from_thread(app.cancel_run)
        except StopIteration as stop:
            totals: object = stop.value  # the run's totals, for the runner
            return totals

    config = RunConfig(
        model="tiny-random",
        calib="sotu",
        eval="moby-dick",
        nsamples=4,
        seqlen=32,
        eval_windows=0 if moment == "last layer" else 2,
        save_model=False,
    )
    app = DuoGPTApp(config=config, runs_dir=runs_dir, catalog=CATALOG, source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.current_mode == "run", timeout=60)
        await wait_for(pilot, lambda: not app.run_active, timeout=240)
        terminal = app.event_log.terminal
        assert isinstance(terminal, ev.Cancelled), app.event_log.activity()
        assert len(app.event_log.layers) == app.event_log.n_layers == 14
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "cancelled"


# --------------------------------------------------------------------------------- runs screen


async def test_runs_screen_columns_and_the_reports_first_lines(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """The runs list has columns for the calibration size x sequence length, the time and the
    start; the detail pane shows the run's configuration and the first lines of its report."""
    path = write_run(runs_dir, "w50", RunConfig(nsamples=8, seqlen=64), n_blocks=2)
    (path / "report.md").write_text("# DuoGPT run report: w50\n\nthe first lines\n", "utf-8")
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("f5")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        labels = [column.label.plain for column in table.ordered_columns]
        assert {"calib", "time", "started"} <= set(labels)
        row = dict(zip(labels, table.get_row_at(0), strict=True))
        assert row["calib"] == "8x64" and row["time"].endswith("s")
        detail = str(screen.query_one("#runs-detail-text", Static).content)
        assert "calib      sotu: 8 x 64 tokens" in detail
        assert "# DuoGPT run report: w50" in detail and "the first lines" in detail
