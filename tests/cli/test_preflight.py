"""The pre-flight, said once: the estimate lines and the file checks that the CLI, the setup
screen and the pipeline share."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from duogpt_tui.cli import preflight_estimate
from duogpt_tui.preflight_text import estimate_lines
from screens.setup_fields import DEEP_INPUTS, inspect_inputs
from solver.config import RunConfig
from solver.errors import InputError
from solver.io import system
from solver.run.input_checks import INPUT_CHECKS
from solver.run.pipeline import preflight


@pytest.mark.parametrize(
    ("config", "available"),
    [
        (RunConfig(model="tiny-random", nsamples=4, seqlen=32, device="cpu"), 64_000.0),
        (RunConfig(model="tiny-random", nsamples=4, seqlen=32, device="cpu"), 300.0),
        (RunConfig(device="cpu"), 64_000.0),
        (RunConfig(model="org/not-cached", device="cpu"), 64_000.0),
    ],
    ids=["tiny", "tiny-too-small", "default", "unknown-size"],
)
def test_estimate_lines(
    config: RunConfig, available: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate line, the memory warning when memory is short, the thin-calibration one."""
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: available)
    lines = estimate_lines(config)
    assert lines.lines == (lines.line, *lines.warnings)
    assert lines.warning == "\n".join(lines.warnings)
    if config.model == "org/not-cached":
        assert lines.line.startswith("pre-flight: no estimate (model size unknown")
    else:
        assert lines.line.startswith("pre-flight: about ") and " on cpu (" in lines.line
    assert ("this run needs about" in lines.warning) == (available == 300.0)
    # tiny-random at 4 x 32 tokens is thin calibration for its 128-input down_proj (issue 9)
    thin = config.model == "tiny-random" and config.nsamples * config.seqlen < 256
    assert ("warning: thin calibration:" in lines.warning) == thin
    assert all(line.startswith("warning: ") and "\n" not in line for line in lines.warnings)


def test_the_cli_prints_the_estimate_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """``duogpt prune`` prints exactly those lines on stderr, and nothing for a bad device."""
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 300.0)
    config = RunConfig(model="tiny-random", nsamples=4, seqlen=32, device="cpu")
    stream = io.StringIO()
    preflight_estimate(Console(file=stream, width=1000), config)
    assert tuple(stream.getvalue().splitlines()) == estimate_lines(config).lines
    monkeypatch.setattr(system, "cuda_available", lambda: False)
    stream = io.StringIO()
    preflight_estimate(Console(file=stream, width=1000), config.replace(device="cuda"))
    assert stream.getvalue() == ""


def test_the_eval_text_is_checked_against_eval_len(tmp_path: Path) -> None:
    """One rule in the pipeline and on the setup screen: one window of ``eval_len`` tokens."""
    text = tmp_path / "short.txt"
    text.write_text("word " * 40, encoding="utf-8")  # 200 bytes: < 256 tokens, >= 64
    base = RunConfig(model="tiny-random", nsamples=1, seqlen=64, eval=str(text), device="cpu")
    preflight(base)
    assert inspect_inputs(base) == {}
    longer = base.replace(eval_seqlen=256)
    with pytest.raises(InputError, match=r"^--eval .*short\.txt"):
        preflight(longer)
    assert set(inspect_inputs(longer)) == {"eval"}
    assert inspect_inputs(longer.replace(eval_windows=0)) == {}
    assert "eval_seqlen" in DEEP_INPUTS["eval"]


def test_each_check_names_the_fields_it_reads() -> None:
    assert [check.field for check in INPUT_CHECKS] == ["device", "model", "calib", "eval"]
    for check in INPUT_CHECKS:
        assert check.field in check.reads
        assert set(check.reads) <= set(RunConfig.__dataclass_fields__)
    assert DEEP_INPUTS["seqlen"] == DEEP_INPUTS["model"]
