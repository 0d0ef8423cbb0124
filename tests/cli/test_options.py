"""The option registry: one declaration per option, and every surface derived from it.

``RunConfig.validate`` (choices, bounds), ``duogpt prune`` / ``duogpt eval`` / ``duogpt-tui``
(their options and ``--help``) all come from ``solver.config.OPTIONS``; so do the exit codes'
help line (``duogpt_tui.exitcodes``). The setup form's side is in ``tests/tui/test_setup.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from typer.testing import CliRunner

from duogpt_tui import summary
from duogpt_tui.cli import app
from duogpt_tui.exitcodes import EXIT_CODES_HELP, ExitCode
from duogpt_tui.tui_arguments import arguments, parse_arguments
from solver.config import OPTION, OPTIONS, RunConfig, options_on
from solver.errors import InputError
from solver.options import Bounds, Option, Surface


def help_text(typer_app: Any, *args: str) -> str:
    """``--help`` of a Typer app (wide, so that no flag is wrapped), as one line."""
    result = CliRunner().invoke(typer_app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def flags(spec: Option) -> list[str]:
    """The flags an option has on the command line."""
    return [spec.flag, spec.off_flag] if spec.type is bool else [spec.flag]


def other_value(spec: Option) -> Any:
    """A valid value of the option that is not its default."""
    if spec.type is bool:
        return not spec.default
    if spec.choices:
        return next(choice for choice in spec.choices if choice != spec.default)
    if spec.type is int:
        return spec.default + 1
    if spec.type is float:
        return spec.default / 2 if spec.default else 0.5
    return "2:4" if spec.name == "pattern" else f"{spec.default}-other"


# --------------------------------------------------------------------- the registry


RENAMED = {"task_limit": "--limit"}
"""Options whose flag is not their field's name (the issue's ``--limit``)."""


def test_every_field_is_one_option_with_its_type_and_default() -> None:
    fields = dataclasses.fields(RunConfig)
    assert [spec.name for spec in OPTIONS] == [f.name for f in fields]
    for spec, item in zip(OPTIONS, fields, strict=True):
        assert spec.default == item.default and isinstance(spec.default, spec.type), spec.name
        flag = RENAMED.get(spec.name, "--" + spec.name.replace("_", "-"))
        assert spec.flag == flag or spec.type is bool, spec.name
        assert spec.help and spec.group, spec.name
        assert not spec.choices or spec.default in spec.choices, spec.name
    assert len({flag for spec in OPTIONS for flag in flags(spec)}) == sum(
        len(flags(spec)) for spec in OPTIONS
    )
    RunConfig().validate()


def test_surfaces_follow_the_declarations() -> None:
    assert options_on(Surface.PRUNE) == OPTIONS == options_on(Surface.TUI)
    assert {spec.name for spec in options_on(Surface.EVAL)} == {
        "eval",
        "act_sparsity",
        "seqlen",
        "eval_windows",
        "eval_placement",
        "device",
        "tasks",
        "task_limit",
    }
    setup = options_on(Surface.SETUP)
    assert all(spec.form is not None for spec in setup)
    rows = [spec.form.row for spec in setup if spec.form is not None]
    assert len(set(rows)) == len(rows)
    for spec in setup:
        form = spec.form
        assert form is not None and form.label, spec.name
        assert not form.choice_labels or len(form.choice_labels) == len(spec.choices), spec.name


@pytest.mark.parametrize("spec", [s for s in OPTIONS if s.bounds is not None], ids=lambda s: s.name)
def test_validate_checks_every_bound(spec: Option) -> None:
    """Each bound is checked by validate, with the flag and the range in one line."""
    bounds = spec.bounds
    assert isinstance(bounds, Bounds)
    bad = bounds.low if bounds.low_open else (bounds.low or 0) - 1
    if bounds.low is None:
        bad = bounds.high
    with pytest.raises(InputError) as error:
        RunConfig().replace(**{spec.name: bad}).validate()
    message = str(error.value)
    assert message.startswith(f"{spec.flag} must be ") and bounds.describe() in message
    assert "\n" not in message
    spec.validate(bounds.low if bounds.low is not None and not bounds.low_open else spec.default)


@pytest.mark.parametrize("spec", [s for s in OPTIONS if s.choices], ids=lambda s: s.name)
def test_validate_checks_every_choice(spec: Option) -> None:
    with pytest.raises(InputError, match=rf"^unknown {spec.noun} 'nope': use "):
        RunConfig().replace(**{spec.name: "nope"}).validate()
    for choice in spec.choices:
        RunConfig().replace(**{spec.name: choice}).validate()


def test_messages_read_as_before() -> None:
    """The wording that README.md and the tests quote."""
    cases = {
        "weight_sparsity": (1.5, "--weight-sparsity must be a number in [0, 1), got 1.5"),
        "damping": (0.0, "--damping must be a number in (0, 10), got 0.0"),
        "nsamples": (0, "--nsamples must be an integer >= 1, got 0"),
        "alpha": (-1.0, "--alpha must be a number >= 0, got -1.0"),
        "residual_damping": (1e3, "--residual-damping must be a number in [0, 1000), got 1000.0"),
        "method": ("obs", "unknown method 'obs': use duogpt, sparsegpt, wanda, magnitude or dense"),
        "act_rule": ("median", "unknown activation rule 'median': use topk or threshold"),
        "device": ("tpu", "unknown device 'tpu': use auto, cpu or cuda"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(InputError) as error:
            OPTION[name].validate(value)
        assert str(error.value) == message
    OPTION["device"].validate("cuda:1")
    with pytest.raises(InputError, match=r"^--seqlen must be an integer, got 'x'$"):
        OPTION["seqlen"].parse(" x ")
    with pytest.raises(InputError, match=r"^--alpha must be a finite number, got 'inf'$"):
        OPTION["alpha"].parse("inf")
    assert (OPTION["alpha"].parse("0.25"), OPTION["seqlen"].parse("64")) == (0.25, 64)


# --------------------------------------------------------------------- the command lines


def test_every_prune_option_is_in_prune_help() -> None:
    text = help_text(app, "prune")
    for spec in options_on(Surface.PRUNE):
        for flag in flags(spec):
            assert flag in text, flag
        assert spec.help_on(Surface.PRUNE).split("{")[0][:30] in text, spec.name


def test_every_eval_option_is_in_eval_help() -> None:
    text = help_text(app, "eval")
    for spec in OPTIONS:
        assert (f"{spec.flag} " in text) == (Surface.EVAL in spec.surfaces), spec.name
    assert "(a run directory's, else 16)" in text


def test_every_tui_option_is_in_duogpt_tui_help() -> None:
    text = help_text(arguments)
    assert "Usage: duogpt-tui" in text or "[RUN_DIR]" in text
    for spec in options_on(Surface.TUI):
        for flag in flags(spec):
            assert flag in text, flag
    assert "--runs-dir" in text and EXIT_CODES_HELP in text


def test_every_option_reaches_the_tui_config() -> None:
    """``duogpt-tui --flag value`` for every option lands in the setup form's config."""
    args: list[str] = []
    expected = {}
    for spec in options_on(Surface.TUI):
        value = other_value(spec)
        expected[spec.name] = value
        if spec.type is bool:
            args.append(spec.flag if value else spec.off_flag)
        else:
            args += [spec.flag, str(value)]
    options = parse_arguments(["some/run", *args, "--runs-dir", "elsewhere"])
    assert options["config"] == RunConfig(**expected)
    assert (str(options["open_path"]), str(options["runs_dir"])) == ("some/run", "elsewhere")


def test_duogpt_tui_leaves_range_checks_to_the_form() -> None:
    """Out-of-range values prefill the form (which shows why); unparsable ones are refused."""
    config = parse_arguments(["--weight-sparsity", "1.5", "--method", "obs"])["config"]
    assert (config.weight_sparsity, config.method) == (1.5, "obs")
    with pytest.raises(InputError, match=r"^--weight-sparsity must be a number, got 'abc'$"):
        parse_arguments(["--weight-sparsity", "abc"])
    with pytest.raises(InputError, match="No such option: --nope"):
        parse_arguments(["--nope"])


def test_eval_rejects_values_it_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["eval", "x", "--seqlen", "4"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --seqlen must be an integer >= 8, got 4"
    result = CliRunner().invoke(app, ["eval", "x", "--seqlen", "many", "--json"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --seqlen must be an integer, got 'many'"
    assert '"category": "input"' in result.stdout


# --------------------------------------------------------------------- exit codes


def test_exit_codes_are_one_enum() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 130]
    assert EXIT_CODES_HELP.startswith("Exit codes: 0 done, 1 the run failed, 2 bad input")
    assert "130 cancelled" in EXIT_CODES_HELP
    assert summary.exit_code({"status": "finished"}) is ExitCode.OK
    assert summary.exit_code({"status": "cancelled"}) is ExitCode.CANCELLED
    assert summary.exit_code({"status": "failed", "category": "input"}) is ExitCode.INPUT
    assert summary.exit_code({"status": "failed", "category": "run"}) is ExitCode.FAILED
