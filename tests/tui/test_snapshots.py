"""SVG snapshots (pytest-textual-snapshot) of the main screens at 120x40.

Every picture comes from scripted events (no clock, no dates, no paths on screen), so the
pictures are the same on every machine. Update them with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.widgets.preflight import PreflightLine
from screens.compare import CompareScreen
from screens.report import ReportScreen
from solver.config import RunConfig
from solver.io import system
from tests.tui.conftest import SIZE, no_preflight, wait_for, write_run
from tests.tui.fakes import CATALOG, FakeSource, scripted_events


def workbench(runs_dir: Path) -> DuoGPTApp:
    """The App on its defaults with a fixed catalog and a fake source."""
    return DuoGPTApp(
        config=RunConfig(),
        runs_dir=runs_dir,
        catalog=CATALOG,
        source=FakeSource(),
        preflight=no_preflight,
    )


def load_scripted_run(app: DuoGPTApp) -> None:
    """Replace the App's log with a finished scripted run (as if reopened)."""
    app.event_log.reset(scripted_events(RunConfig(proxy_every=1), n_blocks=6))
    app.log_changed.publish(None)


def test_setup_screen(snap_compare: Any, runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The setup form on the defaults, with the pre-flight estimate (on a CPU with room)."""
    monkeypatch.setattr(system, "cuda_available", lambda: False)
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 64_000.0)
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Wait for the estimate."""
        await wait_for(
            pilot,
            lambda: (
                "pre-flight: about" in str(app.screen.query_one(PreflightLine).content)
                and not app.screen.query_one(PreflightLine).has_class("-pending")
            ),
        )

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_screen(snap_compare: Any, runs_dir: Path) -> None:
    """The run screen after a scripted 6-block run with proxy perplexities."""
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        load_scripted_run(app)
        await pilot.press("f3")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_report_screen(snap_compare: Any, runs_dir: Path) -> None:
    """The report of the scripted run."""
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        load_scripted_run(app)
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await wait_for(pilot, lambda: screen.text.startswith("# DuoGPT run report"))
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_screen(snap_compare: Any, runs_dir: Path) -> None:
    """Two scripted runs side by side."""
    first = write_run(runs_dir, "w50-x50", RunConfig(weight_sparsity=0.5), n_blocks=4)
    second = write_run(
        runs_dir,
        "w70-x25",
        RunConfig(weight_sparsity=0.7, act_sparsity=0.25),
        n_blocks=4,
        scale=2.0,
    )
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        await pilot.press("f5")
        await app.push_screen(CompareScreen([first, second]))
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
