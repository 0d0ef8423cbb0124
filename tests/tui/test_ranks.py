"""Runs with several ranks from the workbench: the setup form's Ranks field starts the same
launcher as ``duogpt prune --nproc N`` (:func:`duogpt_tui.ranks.source`), and the run header
says how many ranks share the calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from duogpt_tui import ranks, runner
from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runstore import RunDir
from duogpt_tui.widgets.progress_header import ProgressHeader
from solver.config import RunConfig
from solver.events import Event, Finished
from tests.tui.conftest import SIZE, no_preflight, wait_for
from tests.tui.fakes import CATALOG, FakeSource

pytestmark = pytest.mark.anyio

TINY = RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=2, batch_size=2)
"""A run small enough for two real ranks."""


def _activity(app: DuoGPTApp) -> str:
    """The run header's activity line."""
    return str(app.screen.query_one(ProgressHeader).query_one("#progress-activity", Static).content)


async def test_ranks_on_the_form_start_the_launcher_and_the_header_counts_them(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[RunConfig] = []
    replay = FakeSource()

    def launcher(
        config: RunConfig, cancel: Any = None, workdir: Path | None = None, resume: bool = False
    ) -> Any:
        launched.append(config)
        return replay(config, cancel, workdir)

    monkeypatch.setattr(ranks, "source", launcher)  # the launcher, faked
    app = DuoGPTApp(config=TINY, runs_dir=runs_dir, preflight=no_preflight, catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#nproc", Input).value = "2"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.event_log.terminal is not None)
        assert [config.nproc for config in launched] == [2]
        assert app.current_config is not None and app.current_config.nproc == 2
        await wait_for(pilot, lambda: _activity(app).startswith("2 ranks · "))
    (run,) = runs_dir.iterdir()
    assert json.loads((run / "config.json").read_text())["nproc"] == 2


async def test_one_rank_runs_in_this_process(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_launcher(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("one rank needs no launcher")

    monkeypatch.setattr(ranks, "source", no_launcher)
    monkeypatch.setattr(runner, "pipeline_source", FakeSource)  # the solver, faked
    app = DuoGPTApp(config=TINY, runs_dir=runs_dir, preflight=no_preflight, catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.event_log.terminal is not None)
        assert isinstance(app.event_log.terminal, Finished)
        assert "ranks" not in _activity(app)


async def test_two_real_ranks_prune_from_the_workbench(runs_dir: Path) -> None:
    """tiny-random as two gloo ranks, launched from the App's worker and recorded by it."""
    config = TINY.replace(nproc=2, eval_dense=False, save_model=False)
    app = DuoGPTApp(config=config, runs_dir=runs_dir, catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.current_mode == "run", timeout=60)
        await wait_for(pilot, lambda: not app.run_active, timeout=120)
        log = app.event_log
        assert isinstance(log.terminal, Finished), log.activity()
        assert len(log.layers) == log.n_layers == 14
        await wait_for(pilot, lambda: _activity(app).startswith("2 ranks · "))
    (run,) = runs_dir.iterdir()
    opened = RunDir.open(run)
    assert opened.status() == "finished"
    events: list[Event] = opened.events()
    assert sum(1 for e in events if isinstance(e, Finished)) == 1
    assert opened.config().nproc == 2
