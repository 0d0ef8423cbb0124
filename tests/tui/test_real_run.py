"""One real pruning of the built-in ``tiny-random`` model through the App's worker."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.run_plots import ErrorPlot, PerplexityPlot
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
