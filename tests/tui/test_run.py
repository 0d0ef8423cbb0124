"""The run: start, live updates reaching the plots and table, cancel, errors, screens."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import RichLog, Static

from duogpt_tui import runstore
from duogpt_tui.app import DuoGPTApp
from duogpt_tui.messages import RunEvent
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.progress_header import ProgressHeader
from duogpt_tui.widgets.run_plots import (
    BlockSparsityPlot,
    DensityHistogram,
    ErrorPlot,
    PerplexityPlot,
)
from screens.dialogs import ConfirmDialog, ErrorDialog
from screens.run import RunScreen
from solver.config import RunConfig
from solver.events import Cancelled, Event, Finished, Progress, RunStarted
from tests.tui.conftest import SIZE, wait_for, write_run
from tests.tui.fakes import FakeSource, scripted_events

pytestmark = pytest.mark.anyio


def points(plot: ErrorPlot) -> int:
    """Points in the error plot's series."""
    return sum(len(xs) for xs, _ in plot.series.values())


async def test_start_streams_live_updates_to_plots_and_table(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Halfway through, the plots and table hold what was solved so far; then all of it."""
    source = FakeSource(n_blocks=4, pause_at=2)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.current_mode == "run" and len(app.event_log.layers) == 14)
        assert app.run_active
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.query_one(LayerTable).row_count == 14)
        error_plot = screen.query_one(ErrorPlot)
        assert points(error_plot) == 14 and set(error_plot.series) == {
            "q",
            "k",
            "v",
            "o",
            "gate",
            "up",
            "down",
        }
        assert screen.query_one(BlockSparsityPlot).blocks == [0, 1]
        assert screen.query_one(DensityHistogram).counts == [0, 1, 9, 21, 8, 2, 0, 0]
        assert screen.query_one(PerplexityPlot).refs == {"dense": 40.0, "dense_act": 52.0}
        assert "14/28 layers" in str(screen.query_one("#progress-activity", Static).content)
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
        await wait_for(pilot, lambda: screen.query_one(LayerTable).row_count == 28)
        assert points(error_plot) == 28
        ppl_plot = screen.query_one(PerplexityPlot)
        await wait_for(pilot, lambda: ppl_plot.refs.get("pruned") == 60.0)
        await wait_for(pilot, lambda: screen.query_one(ProgressHeader).has_class("-finished"))
        notes = screen.query_one("#notes", RichLog)
        assert any("finished" in line.text for line in notes.lines)
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "finished"
    assert (run / "report.md").is_file()
    assert source.calls[0][1] == run


async def test_cancel_asks_then_ends_with_a_cancelled_run_dir(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """c -> the confirm modal; 'Keep running' keeps it going, 'Cancel run' cancels cleanly."""
    source = FakeSource(n_blocks=4, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.run_active and not app._cancel.is_set()
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app._cancel.is_set()
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
        terminal = app.event_log.terminal
        assert isinstance(terminal, Cancelled) and terminal.block == 1
        assert len(app.event_log.layers) == 7
        header = app.screen.query_one(ProgressHeader)
        await wait_for(pilot, lambda: header.has_class("-cancelled"))
        assert app.screen.check_action("cancel_run", ()) is False
    (run,) = runs_dir.iterdir()
    run_dir = RunDir.open(run)
    assert run_dir.status() == "cancelled"
    assert isinstance(run_dir.events()[-1], Cancelled)
    assert (run / "report.md").is_file() and not (run / "run.lock").exists()


async def test_switching_screens_never_stops_the_run(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """The run keeps going while the user visits every other screen and help."""
    source = FakeSource(n_blocks=3, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        for key in ("f2", "f4", "f5", "f1"):
            await pilot.press(key)
            await pilot.pause()
        await pilot.press("escape")
        assert app.current_mode == "runs" and app.run_active
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
        assert isinstance(app.event_log.terminal, Finished)
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.screen.query_one(LayerTable).row_count == 21)


async def test_progress_messages_replace_older_ones() -> None:
    """A queued progress message may be dropped for a newer one of the same run only."""
    old = RunEvent(Progress(done=1), token=1)
    assert old.can_replace(RunEvent(Progress(done=2), token=1))
    assert not old.can_replace(RunEvent(Progress(done=2), token=2))
    assert not old.can_replace(RunEvent(RunStarted(), token=1))
    assert not RunEvent(RunStarted(), token=1).can_replace(old)


async def test_worker_error_goes_to_a_dialog_not_a_traceback(
    make_app: Callable[..., DuoGPTApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping the runner ends the run with an error dialog; the app lives on."""

    def broken_execute(*args: Any, **kwargs: Any) -> Iterator[Event]:
        """A runner that raises after its first event (a bug in the runner)."""
        yield RunStarted(n_blocks=1, n_layers=7)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("duogpt_tui.runner.execute", broken_execute)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        assert not app.run_active
        dialog = app.screen
        assert isinstance(dialog, ErrorDialog)
        assert "disk on fire" in dialog.message
        assert app.event_log.status == "failed"
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
        assert app.is_running


async def test_quit_during_a_run_asks_and_cancels_first(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """ctrl+q while running asks; yes cancels the run and exits once it has stopped."""
    source = FakeSource(n_blocks=3, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        source.gate.set()
        await wait_for(pilot, lambda: not app.is_running)
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "cancelled"


async def test_second_start_while_running_is_refused(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Only one run at a time: a second start is refused and the first goes on."""
    source = FakeSource(n_blocks=2, pause_at=1)
    app = make_app(source=source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(app.event_log.layers) == 7)
        assert app.start_run(RunConfig()) is False
        source.gate.set()
        await wait_for(pilot, lambda: not app.run_active)
    assert len(list(runs_dir.iterdir())) == 1


def notes_text(app: DuoGPTApp) -> str:
    """Everything the run screen's notes log shows (empty before the screen is up)."""
    logs = app.screen.query("#notes").results(RichLog)
    return "\n".join(line.text for log in logs for line in log.lines)


async def test_a_stale_lock_taken_over_shows_in_the_log(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunDir.notes of the run directory the App creates appear in the run screen's log."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    taken = runs_dir / "left-by-a-crash"
    taken.mkdir()
    lock = {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}
    (taken / "run.lock").write_text(json.dumps(lock), encoding="utf-8")
    monkeypatch.setattr(runstore, "_new_default_dir", lambda root, config: (taken, False))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.current_mode == "run" and not app.run_active)
        assert app.event_log.notices == [
            f"took over a stale lock in {taken} (pid {dead.pid} is no longer running)"
        ]
        await wait_for(pilot, lambda: "note: took over a stale lock" in notes_text(app))
    assert RunDir.open(taken).status() == "finished"


async def test_an_interrupted_run_says_how_to_resume(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Opening a run whose process died mid-way shows a notice with the resume command."""
    config = RunConfig(model="tiny-random")
    events = [e for e in scripted_events(config) if not isinstance(e, Finished)][:20]
    path = write_run(runs_dir, "killed", config, events)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.open_run(path)
        await wait_for(pilot, lambda: "note: this run was interrupted" in notes_text(app))
        (notice,) = app.event_log.notices
        assert f"`duogpt prune --resume {path}` continues it" in notice
