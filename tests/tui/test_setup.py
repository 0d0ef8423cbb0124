"""The setup screen: its fields from the registry, validation as you type, the pre-flight line
and refusals, prefill from the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, Label, Select, Static

from duogpt_tui.app import DuoGPTApp, make_app
from duogpt_tui.app import main as app_main
from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.widgets.preflight import PreflightLine
from screens.catalog import Catalog
from screens.dialogs import FilePickerDialog
from screens.setup import SetupScreen
from screens.setup_fields import FIELDS
from solver.config import OPTION, RunConfig, options_on
from solver.errors import InputError
from solver.options import Surface
from tests.tui.conftest import SIZE, model_folder, wait_for
from tests.tui.fakes import CATALOG

pytestmark = pytest.mark.anyio


def text_of(app: DuoGPTApp, selector: str) -> str:
    """The text a Static shows."""
    return str(app.screen.query_one(selector, Static).content)


def setup_screen(app: DuoGPTApp) -> SetupScreen:
    """The app's current screen, which must be the setup screen."""
    screen = app.screen
    assert isinstance(screen, SetupScreen), screen
    return screen


async def test_bad_sparsity_shows_the_reason_and_blocks_start(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """Typing 1.5 marks the field, explains why, and ctrl+r starts nothing."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert "pre-flight" in text_of(app, "#preflight")
        assert text_of(app, "#reason-weight_sparsity") == ""
        app.screen.query_one("#weight_sparsity", Input).focus()
        await pilot.press("1", ".", "5")
        await pilot.pause()
        field = app.screen.query_one("#weight_sparsity", Input)
        assert field.value == "1.5" and field.has_class("-bad")
        assert "--weight-sparsity must be a number in [0, 1)" in text_of(
            app, "#reason-weight_sparsity"
        )
        assert app.screen.query_one(PreflightLine).has_class("-invalid")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.current_mode == "setup" and not app.run_active
        assert app.start_error.startswith("cannot start: --weight-sparsity")
        assert "cannot start" in text_of(app, "#start-error")
        assert list(runs_dir.iterdir()) == []
        await pilot.press("backspace", "backspace", "backspace", "0", ".", "6")
        await pilot.pause()
        assert text_of(app, "#reason-weight_sparsity") == ""
        assert not app.screen.query_one(PreflightLine).has_class("-invalid")


async def test_pattern_numbers_and_sources_are_checked(make_app: Callable[..., DuoGPTApp]) -> None:
    """A malformed pattern, a non-integer and a missing file each get their own reason."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        screen.query_one("#pattern", Input).value = "3:2"
        screen.query_one("#nsamples", Input).value = "four"
        screen.query_one("#calib", Input).value = "/no/such/file.txt"
        await pilot.pause()
        assert "malformed pattern" in text_of(app, "#reason-pattern")
        assert "--nsamples must be an integer, got 'four'" in text_of(app, "#reason-nsamples")
        assert "is not a file" in text_of(app, "#reason-calib")
        screen.query_one("#pattern", Input).value = "2:4"
        await pilot.pause()
        assert "2 of every 4" in text_of(app, "#reason-pattern")
        assert "ignored" in text_of(app, "#reason-weight_sparsity")
        assert set(screen.problems) == {"nsamples", "calib"}


async def test_quick_pick_fills_the_typed_spec(make_app: Callable[..., DuoGPTApp]) -> None:
    """Choosing a built-in text in the list fills the field, and a typed name selects it."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#eval-choice", Select).value = "sotu"
        await pilot.pause()
        assert screen.query_one("#eval", Input).value == "sotu"
        screen.query_one("#eval", Input).value = "moby-dick"
        await pilot.pause()
        assert screen.query_one("#eval-choice", Select).value == "moby-dick"
        screen.query_one("#eval", Input).value = "./mine.txt"
        await pilot.pause()
        assert screen.query_one("#eval-choice", Select).value is Select.NULL


async def test_preflight_refusal_is_one_line(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path
) -> None:
    """An InputError from the pre-flight check shows as one line on setup; no run dir."""

    def refuse(config: RunConfig) -> None:
        """A pre-flight check that always says no."""
        raise InputError("model 'nope' not found: give a built-in name or a folder")

    app = make_app(preflight=refuse)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: bool(app.start_error) and not app.run_active)
        assert app.current_mode == "setup"
        line = text_of(app, "#start-error")
        assert line == "cannot start: model 'nope' not found: give a built-in name or a folder"
        assert "\n" not in line and "Traceback" not in line
        assert list(runs_dir.iterdir()) == []


async def test_proxy_toggle_sets_proxy_every(make_app: Callable[..., DuoGPTApp]) -> None:
    """The proxy-perplexity toggle enables its block count and lands in the config."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        assert screen.query_one("#proxy_every", Input).disabled
        screen.query_one("#proxy_every-on").focus()
        await pilot.pause()
        await pilot.press("space")
        await pilot.pause()
        assert not screen.query_one("#proxy_every", Input).disabled
        config = screen.revalidate()
        assert config is not None and config.proxy_every == 5


async def test_command_line_prefills_setup(tmp_path: Path) -> None:
    """``duogpt-tui --model ... --weight-sparsity ...`` fills the form."""
    app = make_app(
        [
            "--runs-dir",
            str(tmp_path),
            "--model",
            "tiny-random",
            "--weight-sparsity",
            "0.7",
            "--pattern",
            "2:4",
            "--act-sparsity",
            "0.25",
            "--nsamples",
            "8",
            "--device",
            "cpu",
            "--act-rule",
            "threshold",
            "--alpha",
            "0.25",
            "--damping",
            "0.05",
            "--dtype",
            "bfloat16",
            "--proxy-every",
            "2",
        ],
        catalog=CATALOG,
    )
    assert app.runs_dir == tmp_path and app.initial_config.weight_sparsity == 0.7
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = setup_screen(app)
        assert screen.query_one("#model", Input).value == "tiny-random"
        assert screen.query_one("#weight_sparsity", Input).value == "0.7"
        assert screen.query_one("#pattern", Input).value == "2:4"
        assert screen.query_one("#nsamples", Input).value == "8"
        assert screen.query_one("#act_rule", Select).value == "threshold"
        assert screen.query_one("#dtype", Select).value == "bfloat16"
        assert screen.query_one("#damping", Input).value == "0.05"
        assert screen.query_one("#proxy_every", Input).value == "2"
        assert "half precision" in text_of(app, "#reason-dtype")
        config = screen.revalidate()
        assert config is not None and config.act_sparsity == 0.25 and config.device == "cpu"
        assert (config.act_rule, config.alpha, config.damping) == ("threshold", 0.25, 0.05)
        assert (config.dtype, config.proxy_every) == ("bfloat16", 2)


async def test_rule_damping_and_dtype_are_checked(make_app: Callable[..., DuoGPTApp]) -> None:
    """The new fields land in the config and are validated by RunConfig.validate."""
    app = make_app(config=RunConfig(model="tiny-random", dtype="float8"))
    async with app.run_test(size=SIZE) as pilot:
        screen = setup_screen(app)
        assert "unknown dtype 'float8'" in text_of(app, "#reason-dtype")
        screen.query_one("#dtype", Select).value = "float16"
        screen.query_one("#act_rule", Select).value = "threshold"
        screen.query_one("#damping", Input).value = "0"
        await pilot.pause()
        assert text_of(app, "#reason-dtype").startswith("weights in half precision")
        assert "--damping must be a number in (0, 10), got 0.0" in text_of(app, "#reason-damping")
        screen.query_one("#damping", Input).value = "0.1"
        screen.query_one("#method", Select).value = "wanda"
        await pilot.pause()
        assert "ignored: only duogpt and sparsegpt" in text_of(app, "#reason-damping")
        assert "ignored: only duogpt uses alpha" in text_of(app, "#reason-alpha")
        config = screen.revalidate()
        assert config is not None
        assert (config.act_rule, config.damping, config.dtype) == ("threshold", 0.1, "float16")


def test_bad_run_dir_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    """``duogpt-tui NOT_A_RUN`` is refused before any screen, as an InputError."""
    with pytest.raises(InputError, match="not a run directory"):
        make_app([str(tmp_path / "missing")])


async def test_file_picker_fills_the_model_field(
    make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """ctrl+o opens the picker; choosing a model folder fills the field and validates it."""
    model_dir = model_folder(tmp_path / "my-model")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePickerDialog))
        app.screen.query_one("#picker-path", Input).value = str(model_dir)
        await pilot.click("#ok")
        await wait_for(pilot, lambda: not isinstance(app.screen, FilePickerDialog))
        await pilot.pause()
        assert app.screen.query_one("#model", Input).value == str(model_dir)
        assert app.screen.query_one("#model-choice", Select).value is Select.NULL
        assert text_of(app, "#reason-model") == "local model folder · llama"
        await wait_for(pilot, lambda: "pre-flight: about" in text_of(app, "#preflight"))
        assert "M params in float32" in text_of(app, "#preflight")
        assert text_of(app, "#reason-model") == "local model folder · llama"


def test_catalog_discovery_lists_the_built_ins() -> None:
    """The real catalog offers the solver's built-in models and texts; CUDA only if present."""
    import torch

    catalog = Catalog.discover()
    assert {"smollm2-135m", "tiny-random"} <= set(catalog.models)
    assert {"sotu", "moby-dick", "wikitext2", "c4"} <= set(catalog.texts)
    assert ("cuda" in catalog.devices) == torch.cuda.is_available()


async def test_every_setup_option_is_on_the_form(make_app: Callable[..., DuoGPTApp]) -> None:
    """Each registry option meant for the form has its row, label and widget, in row order."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        form = app.screen.query_one("#setup-form")
        rows: list[str] = []
        for row in form.query(".field-row"):
            assert row.id is not None, row
            rows.append(row.id)
        specs = options_on(Surface.SETUP)
        assert sorted(rows) == sorted(f"row-{spec.name}" for spec in specs)
        assert rows == [f"row-{name}" for name in FIELDS]
        for spec in specs:
            assert spec.form is not None
            row = app.screen.query_one(f"#row-{spec.name}")
            assert str(row.query_one(".field-label", Label).content) == spec.form.label
            assert app.screen.query_one(f"#{spec.name}").id == spec.name
        method = app.screen.query_one("#method", Select)
        assert [value for _, value in method._options] == list(OPTION["method"].choices)


def test_duogpt_tui_bad_input_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    """``duogpt-tui`` says what is wrong in one ``error:`` line and exits 2, like ``duogpt``."""
    for args, message in (
        (["--seqlen", "long"], "error: --seqlen must be an integer, got 'long'"),
        (["--no-such-option"], "error: No such option: --no-such-option"),
        (["/no/such/run"], "error: "),
    ):
        with pytest.raises(SystemExit) as exit_info:
            app_main(args)
        assert exit_info.value.code == ExitCode.INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(message), err
        assert "Traceback" not in err and "usage:" not in err.lower()
