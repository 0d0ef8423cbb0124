"""Real pruning of the built-in ``tiny-random`` model through the App's worker (at the
snapshot size, and at 80x24)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Static

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.preflight import PreflightLine
from duogpt_tui.widgets.progress_header import ProgressHeader
from duogpt_tui.widgets.run_plots import ErrorPlot, PerplexityPlot
from screens.run import RunScreen
from solver.config import RunConfig
from solver.events import Finished
from tests.tui.conftest import SIZE, wait_for
from tests.tui.fakes import CATALOG
from tests.tui.latency import measure_switches

pytestmark = pytest.mark.anyio


async def test_tiny_random_prunes_to_completion_through_the_worker(
    runs_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    """The real solver runs on the worker thread; the UI answers keys meanwhile.

    Screen switches (F4/F3) are timed while the solver prunes (``tests/tui/latency.py``; run it
    as a script for a longer run). The bound is loose, for busy CI machines: on a 2-core machine
    shared with other work a switch takes ~50 ms (median) during a run.
    """
    config = RunConfig(
        model="tiny-random", calib="sotu", eval="moby-dick", nsamples=4, seqlen=32, eval_windows=2
    )
    app = DuoGPTApp(config=config, runs_dir=runs_dir, catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        latency = await measure_switches(app, pilot, presses=6)
        record_property("key_latency", latency.summary())
        if latency.switches:
            assert statistics.median(latency.switches) < 1.0, latency.summary()
        await pilot.press("f3")
        await wait_for(pilot, lambda: not app.run_active, timeout=240)
        log = app.event_log
        assert isinstance(log.terminal, Finished), log.activity()
        assert log.started is not None and log.started.model == "tiny-random"
        assert len(log.layers) == log.n_layers == 14
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one(LayerTable).row_count == 14)
        assert sum(len(xs) for xs, _ in screen.query_one(ErrorPlot).series.values()) == 14
        await wait_for(pilot, lambda: "pruned" in screen.query_one(PerplexityPlot).refs)
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "finished"
    assert (run / "report.md").read_text(encoding="utf-8").startswith("#")


async def test_tiny_random_run_at_80x24(runs_dir: Path) -> None:
    """The smallest supported terminal: Start on setup, a real pruning run, and the run screen
    shows its result (status, every layer, the pruned perplexity, what discovery found)."""
    config = RunConfig(
        model="tiny-random",
        calib="sotu",
        eval="moby-dick",
        nsamples=4,
        seqlen=32,
        eval_windows=2,
        save_model=False,
    )
    app = DuoGPTApp(config=config, runs_dir=runs_dir, catalog=CATALOG)
    async with app.run_test(size=(80, 24)) as pilot:
        preflight = app.screen.query_one(PreflightLine)
        # the estimate takes rows above the button when it arrives: click after it
        await wait_for(pilot, lambda: "pre-flight: about" in str(preflight.content), timeout=60)
        await pilot.click("#start-button")
        await wait_for(pilot, lambda: app.current_mode == "run", timeout=60)
        await wait_for(pilot, lambda: not app.run_active, timeout=240)
        assert isinstance(app.event_log.terminal, Finished), app.event_log.activity()
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.compact
        await wait_for(pilot, lambda: screen.query_one(LayerTable).row_count == 14)
        header = screen.query_one(ProgressHeader)
        await wait_for(pilot, lambda: header.has_class("-finished"))
        status = screen.query_one("#progress-status", Static)
        assert str(status.content) == "finished" and status.region.width > 0
        assert "tiny-random (llama)" in str(screen.sub_title)
        layout = screen.query_one("#model-layout", Static)
        # shown once the layout note has arrived and the screen has been laid out again
        await wait_for(pilot, lambda: layout.region.height == 1)
        assert str(layout.content).startswith("llama: 2 blocks in model.layers; groups [")
        await wait_for(pilot, lambda: "pruned" in screen.query_one(PerplexityPlot).refs)
        assert screen.query_one(ErrorPlot).region.height > 5  # the page shown at 80x24
        assert screen.query_one(LayerTable).region.height > 3
    (run,) = runs_dir.iterdir()
    assert RunDir.open(run).status() == "finished"
