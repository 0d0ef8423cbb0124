"""The weight pattern on the setup form: presets plus ``custom`` (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.app import make_app as app_factory
from screens.setup import SetupScreen
from screens.setup_fields import CUSTOM, PRESETS, check_preset
from solver.config import RunConfig
from tests.tui.conftest import SIZE, wait_for, write_run
from tests.tui.fakes import CATALOG

pytestmark = pytest.mark.anyio


def setup_screen(app: DuoGPTApp) -> SetupScreen:
    """The app's current screen, which must be the setup screen."""
    screen = app.screen
    assert isinstance(screen, SetupScreen), screen
    return screen


def reason(app: DuoGPTApp) -> str:
    """The pattern's reason (or hint) line."""
    return str(app.screen.query_one("#reason-pattern", Static).content)


def test_the_presets_come_from_the_registry() -> None:
    """The pattern's presets are the registry's suggestions, each one valid; custom checks."""
    assert PRESETS == {"pattern": ("unstructured", "2:4", "4:8")}
    assert check_preset("pattern", "2:4", "") == ("2:4", "", "2 of every 4 weights pruned (50%)")
    assert check_preset("pattern", CUSTOM, " 1:4 ")[:2] == ("1:4", "")
    value, problem, _ = check_preset("pattern", CUSTOM, "")
    assert value is None and problem.startswith("type a custom weight pattern")


async def test_choosing_a_preset_sets_the_config(make_app: Callable[..., DuoGPTApp]) -> None:
    """unstructured, 2:4 and 4:8 are picked from the list; the text field stays hidden."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        preset = screen.query_one("#pattern-preset", Select)
        field = screen.query_one("#pattern", Input)
        assert preset.value == "unstructured" and not field.display
        assert [value for _, value in preset._options] == ["unstructured", "2:4", "4:8", CUSTOM]
        for choice in ("2:4", "4:8", "unstructured"):
            preset.value = choice
            await pilot.pause()
            config = screen.revalidate()
            assert config is not None and config.pattern == choice
            assert not field.display
        preset.value = "2:4"
        await pilot.pause()
        assert "2 of every 4 weights pruned" in reason(app)
        assert "ignored: the 2:4 pattern" in str(
            screen.query_one("#reason-weight_sparsity", Static).content
        )


async def test_custom_reveals_a_field_checked_as_you_type(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """custom shows the text field (focused, empty); 1:4 is a valid pattern; garbage gets the
    one-line reason and blocks start."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        screen.query_one("#pattern-preset", Select).value = CUSTOM
        await pilot.pause()
        field = screen.query_one("#pattern", Input)
        assert field.display and field.value == "" and screen.focused is field
        assert "type a custom weight pattern" in reason(app)
        await pilot.press("1", ":", "4")
        await pilot.pause()
        assert field.value == "1:4" and not field.has_class("-bad")
        assert "1 of every 4 weights pruned (25%)" in reason(app)
        config = screen.revalidate()
        assert config is not None and config.pattern == "1:4"
        await pilot.press("backspace", "backspace", "backspace", "x", "y", "z")
        await pilot.pause()
        line = screen.query_one("#reason-pattern", Static)
        assert field.has_class("-bad") and line.has_class("-error")
        assert reason(app).startswith("malformed pattern 'xyz'") and "\n" not in reason(app)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.current_mode == "setup" and not app.run_active
        assert app.start_error == f"cannot start: {reason(app)}"
        assert screen.focused is field
        assert list(runs_dir.iterdir()) == []
        await pilot.press("backspace", "backspace", "backspace", "2", ":", "4")
        await pilot.pause()
        assert screen.query_one("#pattern-preset", Select).value == CUSTOM  # typed stays custom
        config = screen.revalidate()
        assert config is not None and config.pattern == "2:4"


@pytest.mark.parametrize(
    ("pattern", "choice", "shown"), [("2:4", "2:4", False), ("3:8", CUSTOM, True)]
)
async def test_a_run_dir_prefills_its_pattern(
    runs_dir: Path, tmp_path: Path, pattern: str, choice: str, shown: bool
) -> None:
    """``duogpt-tui RUN_DIR``: a preset pattern selects the preset; another N:M selects custom
    and fills the field (and leaves the focus on the first field)."""
    path = write_run(tmp_path, "mine", RunConfig(pattern=pattern), n_blocks=2)
    app = app_factory([str(path), "--runs-dir", str(runs_dir)], catalog=CATALOG)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen))
        await pilot.pause()
        screen = setup_screen(app)
        field = screen.query_one("#pattern", Input)
        assert screen.query_one("#pattern-preset", Select).value == choice
        assert field.value == pattern and field.display is shown
        assert screen.focused is screen.query_one("#model-choice")  # a prefill moves no focus
        config = screen.revalidate()
        assert config is not None and config.pattern == pattern


async def test_reopen_in_setup_fills_the_pattern(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path, tmp_path: Path
) -> None:
    """Reopening a run in setup: 3:8 switches the list to custom and fills the field; then a
    2:4 run switches it back to the preset and hides the field."""
    custom = write_run(tmp_path, "custom", RunConfig(pattern="3:8"), n_blocks=2)
    preset = write_run(tmp_path, "preset", RunConfig(pattern="2:4"), n_blocks=2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        select = screen.query_one("#pattern-preset", Select)
        field = screen.query_one("#pattern", Input)
        assert app.reopen_in_setup(custom)
        await wait_for(pilot, lambda: select.value == CUSTOM)
        await pilot.pause()
        assert field.value == "3:8" and field.display
        assert "3 of every 8" in reason(app)
        assert app.reopen_in_setup(preset)
        await wait_for(pilot, lambda: select.value == "2:4")
        await pilot.pause()
        assert field.value == "2:4" and not field.display
        config = screen.revalidate()
        assert config is not None and config.pattern == "2:4"
