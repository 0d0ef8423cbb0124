"""The report screen: the report of the log, export to a file, no overwrite without asking."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from duogpt_tui import report
from duogpt_tui.app import DuoGPTApp
from duogpt_tui.widgets.report_view import ReportView
from screens.dialogs import ConfirmDialog, PathDialog
from screens.report import EMPTY_REPORT, ReportScreen
from tests.tui.conftest import SIZE, wait_for

pytestmark = pytest.mark.anyio


async def finish_a_run(app: DuoGPTApp, pilot: Pilot[int]) -> None:
    """Start the fake run from the setup screen and wait for its end."""
    await pilot.press("f2", "ctrl+r")
    await wait_for(pilot, lambda: app.event_log.terminal is not None and not app.run_active)


async def test_report_shows_the_runs_markdown(make_app: Callable[..., DuoGPTApp]) -> None:
    """Before a run: a placeholder; after: render_markdown of the log."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        await wait_for(pilot, lambda: screen.text == EMPTY_REPORT)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen)  # nothing to export yet
        await finish_a_run(app, pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: screen.text != EMPTY_REPORT)
        assert screen.text == report.render_markdown(app.event_log.events)
        view = screen.query_one(ReportView)
        shown = "\n".join(line.text for line in view.lines)
        assert "DuoGPT run report" in shown and "Per layer" in shown and "| ---" not in shown


async def test_export_writes_and_asks_before_overwriting(
    make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """e -> path modal; a new path is written; an existing one needs a yes."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await finish_a_run(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        expected = report.render_markdown(app.event_log.events)

        # 1. The default is a file named after the run, not the run's own report.md (which the
        #    run already wrote: exporting over it would always ask to overwrite).
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, PathDialog))
        assert app.run_path is not None
        field = app.screen.query_one(Input)
        assert field.value == str(Path.cwd() / f"{app.run_path.name}-report.md")

        # 2. A new file: written at once.
        target = tmp_path / "exported.md"
        field.value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.exists())
        assert target.read_text(encoding="utf-8") == expected
        assert app.last_export == target
        umask = os.umask(0)
        os.umask(umask)
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not 0600

        # 3. An existing file: a confirm modal; "Keep it" leaves the file alone.
        target.write_text("mine\n", encoding="utf-8")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, PathDialog))
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        assert target.read_text(encoding="utf-8") == "mine\n"

        # 4. ... and "Replace" replaces it.
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, PathDialog))
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: target.read_text(encoding="utf-8") == expected)


async def test_export_refuses_a_folder_and_can_be_cancelled(
    make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """A folder is not a file name; escape closes the modal without writing."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await finish_a_run(app, pilot)
        await pilot.press("f4", "e")
        await wait_for(pilot, lambda: isinstance(app.screen, PathDialog))
        app.screen.query_one(Input).value = str(tmp_path)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PathDialog)
        assert "is a folder" in str(app.screen.query_one("#path-reason", Static).content)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        assert app.last_export is None
