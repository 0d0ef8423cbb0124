"""SVG snapshots (pytest-textual-snapshot) of the main screens at 160x48 and at 80x24.

Every picture comes from scripted events (no clock, no dates, no paths on screen), so the
pictures are the same on every machine. Update them with ``pytest --snapshot-update``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from duogpt_tui import runstore
from duogpt_tui.app import DuoGPTApp
from duogpt_tui.widgets.plot_base import ThemedPlot
from duogpt_tui.widgets.preflight import PreflightLine
from screens.compare import CompareScreen
from screens.report import ReportScreen
from solver.config import RunConfig
from solver.io import system
from tests.tui.conftest import no_preflight, wait_for, write_run
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


SIZES = pytest.mark.parametrize("size", [(160, 48), (80, 24)], ids=["160x48", "80x24"])
"""Every picture at a large and at the smallest supported terminal."""


def load_scripted_run(app: DuoGPTApp, upto: int | None = None) -> None:
    """Replace the App's log with a scripted run (as if reopened): finished, or its first
    ``upto`` events (a run in the middle of block 3)."""
    events = list(scripted_events(RunConfig(proxy_every=1), n_blocks=6))
    app.event_log.reset(events if upto is None else events[:upto])
    app.log_changed.publish(None)


@SIZES
def test_setup_screen(
    snap_compare: Any, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
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

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_run_screen(snap_compare: Any, runs_dir: Path, size: tuple[int, int]) -> None:
    """The run screen after a scripted 6-block run with proxy perplexities."""
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        load_scripted_run(app)
        await pilot.press("f3")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_run_screen_mid_run(snap_compare: Any, runs_dir: Path, size: tuple[int, int]) -> None:
    """The run screen in the middle of block 3 of 6 (the table follows the last layer)."""
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        load_scripted_run(app, upto=60)
        await pilot.press("f3")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_runs_screen(
    snap_compare: Any, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    """Two runs listed, the detail pane on the highlighted one."""
    monkeypatch.setattr(runstore, "_started_text", lambda path: "2027-01-15 08:00:00")
    write_run(runs_dir, "w50-x50", RunConfig(weight_sparsity=0.5), n_blocks=4)
    write_run(runs_dir, "w70-x25", RunConfig(weight_sparsity=0.7, act_sparsity=0.25), n_blocks=4)
    for path in runs_dir.iterdir():  # the same dates on every machine
        for name in ("config.json", "events.jsonl"):
            os.utime(path / name, (1_800_000_000, 1_800_000_000 + len(path.name)))
    app = workbench(runs_dir)

    async def run_before(pilot: Pilot[int]) -> None:
        """Set the scene before the picture is taken."""
        await pilot.press("f5")
        await pilot.pause(0.3)
        app.screen.query_one("#runs-where").display = False  # the folder differs per machine
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_report_screen(snap_compare: Any, runs_dir: Path, size: tuple[int, int]) -> None:
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

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_compare_screen(snap_compare: Any, runs_dir: Path, size: tuple[int, int]) -> None:
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
        for plot in app.screen.query(ThemedPlot):  # drawn again at the settled size
            plot.replot()
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
