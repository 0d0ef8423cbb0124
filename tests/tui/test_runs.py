"""The runs screen: listing run dirs, opening one, marking and comparing runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import DataTable

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.widgets.compare_plots import CompareErrorPlot, SparsityPerplexityPlot
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.run_plots import ErrorPlot
from screens.compare import CompareScreen
from screens.report import ReportScreen
from screens.run import RunScreen
from screens.runs import RunsScreen
from solver.config import RunConfig
from solver.events import Finished
from tests.tui.conftest import SIZE, wait_for, write_run

pytestmark = pytest.mark.anyio


def two_runs(root: Path) -> tuple[Path, Path]:
    """Two finished runs at different sparsities, written through the run store."""
    first = write_run(root, "w50-x50", RunConfig(weight_sparsity=0.5), n_blocks=3)
    second = write_run(
        root, "w70-x25", RunConfig(weight_sparsity=0.7, act_sparsity=0.25), n_blocks=3, scale=2.0
    )
    return first, second


async def test_runs_list_shows_each_run(make_app: Callable[..., DuoGPTApp], runs_dir: Path) -> None:
    """Status, model, method, sparsities and perplexities, one row per run dir."""
    two_runs(runs_dir)
    (runs_dir / "not-a-run").mkdir()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        rows = {tuple(table.get_row_at(i))[-1]: table.get_row_at(i) for i in range(2)}
        assert rows["w50-x50"][1:9] == [
            "finished",
            "scripted-llama",
            "duogpt",
            "50.0%",
            "47.0%",
            "16x256",
            "40.00",
            "60.00",
        ]
        assert rows["w70-x25"][4:9] == ["70.0%", "22.0%", "16x256", "40.00", "120.00"]


async def test_enter_opens_a_run_into_the_run_and_report_screens(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """A run's plots, table and report are rebuilt from its events.jsonl."""
    first, _ = two_runs(runs_dir)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        row = next(i for i in range(table.row_count) if table.get_row_at(i)[-1] == "w50-x50")
        table.move_cursor(row=row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.run_path == first
        assert isinstance(app.event_log.terminal, Finished)
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(LayerTable).row_count == 21)
        assert sum(len(xs) for xs, _ in screen.query_one(ErrorPlot).series.values()) == 21
        await pilot.press("f4")
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen)
        assert "scripted-llama" in app.screen.text


async def test_mark_and_compare_two_runs(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """space marks, c compares: a headline row per run, overlaid curves, ppl vs sparsity."""
    two_runs(runs_dir)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)  # fewer than two marked
        await pilot.press("space", "down", "space")
        await pilot.pause()
        assert len(app.screen.marked) == 2
        table = app.screen.query_one(DataTable)
        assert [table.get_row_at(i)[0] for i in range(2)] == ["●", "●"]
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        headline = screen.query_one(DataTable)
        assert headline.row_count == 2
        names = [run.name for run in screen.query_one(CompareErrorPlot).runs]
        assert [name.split(" ", 1)[0] for name in names] == ["#1", "#2"]  # short legend labels
        assert sorted(name.split(" ", 1)[1] for name in names) == ["W50 X50", "W70 X25"]
        assert all(len(run.errors) == 21 for run in screen.query_one(CompareErrorPlot).runs)
        ppl_plot = screen.query_one(SparsityPerplexityPlot)
        assert sorted((run.weight_sparsity, run.ppl) for run in ppl_plot.runs) == [
            (0.5, 60.0),
            (0.7, 120.0),
        ]
        await pilot.press("x")
        assert ppl_plot.axis == "dual"
        assert ppl_plot.x_of(ppl_plot.runs[0]) is not None
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))


async def test_open_run_from_the_command_line(runs_dir: Path) -> None:
    """``duogpt-tui RUN_DIR`` starts on the run screen with that run."""
    from duogpt_tui.app import make_app as app_factory
    from tests.tui.fakes import CATALOG

    first, _ = two_runs(runs_dir)
    app = app_factory([str(first), "--runs-dir", str(runs_dir)], catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.run_path == first and len(app.event_log.layers) == 21


async def test_a_run_written_by_another_process_is_followed(runs_dir: Path) -> None:
    """Opening a running run dir shows its events so far, then the ones appended later."""
    from duogpt_tui.app import DuoGPTApp as App
    from duogpt_tui.runstore import RunDir
    from tests.tui.fakes import CATALOG, scripted_events

    config = RunConfig()
    events = list(scripted_events(config, n_blocks=2))
    writer = RunDir.create(config, out=runs_dir / "live")  # locked by this (live) process
    try:
        for event in events[:12]:
            writer.append(event)
        app = App(runs_dir=runs_dir, catalog=CATALOG, open_path=writer.path)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
            assert app.event_log.status == "running"
            before = len(app.event_log.layers)
            for event in events[12:]:
                writer.append(event)
            await wait_for(pilot, lambda: isinstance(app.event_log.terminal, Finished))
            assert len(app.event_log.layers) == 14 > before
            assert app._follow_timer is None
    finally:
        writer.release()


async def test_a_damaged_run_opens_with_a_warning(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """A garbage line in events.jsonl is skipped: the list marks the run, its log says why."""
    from tests.tui.test_run import notes_text

    first, _ = two_runs(runs_dir)
    events = first / "events.jsonl"
    lines = events.read_text().splitlines(keepends=True)
    events.write_text("".join([*lines[:4], "garbage\n", *lines[4:]]))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        row = next(i for i in range(table.row_count) if table.get_row_at(i)[-1] == "w50-x50")
        assert table.get_row_at(row)[1] == "finished ⚠"
        table.move_cursor(row=row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert isinstance(app.event_log.terminal, Finished)
        assert any("skipped 1 corrupt line (line 5)" in text for text in app.event_log.notices)
        await wait_for(pilot, lambda: "corrupt" in notes_text(app))


def test_compare_shows_each_runs_zero_shot_accuracy() -> None:
    """Runs scored with --tasks get one accuracy column per task (pruned model); others '-'."""
    from duogpt_tui.runview import RunView
    from screens.compare import columns, headline_cells, task_names
    from tests.report import scripted

    scored, plain = RunView.of(scripted.run_with_tasks()), RunView.of(scripted.finished_run())
    tasks = task_names([scored, plain])
    assert tasks == ["next_sentence", "spam_ham"]
    header = columns(tasks)
    assert header.index("acc next_sentence") < header.index("status")
    cells = dict(zip(header, headline_cells(0, "a", scored, tasks), strict=True))
    assert (cells["acc spam_ham"], cells["acc next_sentence"]) == ("55.0%", "30.0%")
    other = dict(zip(header, headline_cells(1, "b", plain, tasks), strict=True))
    assert other["acc spam_ham"] == "-"
