"""``duogpt speed``: bad input exits 2 with one line; the table and JSON; a run directory's
measurement recorded as an event and shown in its report; a running or unwritable run refused
(the measurement is faked throughout)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from duogpt_tui import cli_speed, runstore
from duogpt_tui.cli import app
from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.errors import InputError
from tests.cli.conftest import Cli
from tests.cli.test_cli import one_error_line
from tests.report import scripted

ROW = {"shape": "64x64", "layers": 4}
for _mode in ("dense", "act", "weight", "dual"):
    ROW |= {f"{_mode}_us": 2.0, f"{_mode}_x": 1.5, f"{_mode}_bound": 1.9}

RESULT: dict[str, Any] = {
    "target": "run",
    "backend": "cpp",
    "threads": 1,
    "act_sparsity": 0.5,
    "act_rule": "topk",
    "dense_tokens_per_s": 100.0,
    "act_tokens_per_s": 150.0,
    "dual_tokens_per_s": 180.0,
    "speedup_act": 1.5,
    "speedup_dual": 1.8,
    "same_tokens": True,
    "tokens": 8,
    "layers": [ROW, ROW | {"shape": "all"}],
    "notes": ["a note"],
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def measure(target: str, **kwargs: Any) -> dict[str, Any]:
        if target == "missing":
            raise InputError("no model named 'missing'")
        seen.update(kwargs, target=target)
        return RESULT

    monkeypatch.setattr(cli_speed, "measurer", lambda: measure)
    return seen


@pytest.mark.parametrize(
    "args",
    [["run", "--tokens", "0"], ["run", "--threads", "0"], ["missing"], ["run", "--tokens", "x"]],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fake: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["speed", *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_table_and_json(fake: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["speed", "run", "--tokens", "8", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert fake == {"target": "run", "tokens": 8, "threads": 1, "device": "cpu"} | {
        "progress": fake["progress"]
    }
    assert "64x64" in result.stdout and "[1.90x]" in result.stdout and "1.80x" in result.stdout
    assert "note: a note" in result.stderr
    data = json.loads(CliRunner().invoke(app, ["speed", "run", "--json"]).stdout)
    for key in ("dense_tokens_per_s", "speedup_dual", "same_tokens", "backend", "layers"):
        assert data[key] == RESULT[key]


def test_cuda_device_is_bad_input() -> None:
    from solver.kernels.speed import measure

    with pytest.raises(InputError, match="CPU only"):
        measure("tiny-random", device="cuda")


# --------------------------------------------------------------------- recorded in a run directory

FAST = ("--model", "tiny-random", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2")


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fake measurement (:func:`scripted.speed_result`; ``speedup_dual`` from the list
    ``speedups`` in turn); returns the targets it was asked to measure."""
    targets: list[str] = []
    speedups = [1.8, 2.25]

    def measure(target: str, **kwargs: Any) -> dict[str, Any]:
        targets.append(target)
        return scripted.speed_result(speedups[(len(targets) - 1) % len(speedups)])

    monkeypatch.setattr(cli_speed, "measurer", lambda: measure)
    return targets


def speed_events(run: Path) -> list[ev.DecodeSpeedMeasured]:
    """The decode-speed events of a run directory."""
    return [e for e in RunDir.open(run).events() if isinstance(e, ev.DecodeSpeedMeasured)]


def test_speed_of_a_run_dir_is_recorded_and_reported(cli: Cli, measured: list[str]) -> None:
    assert cli("prune", *FAST, "--out", "run").exit_code == 0
    run = cli.root / "run"
    assert "## Measured decode speed" not in (run / "report.md").read_text()
    before = RunDir.open(run).events()

    result = cli("speed", "run", "--tokens", "8")
    assert result.exit_code == 0, result.stderr
    assert measured == ["run"]
    assert "recorded in" in result.stderr and "measurement 1 of this run" in result.stderr
    events = RunDir.open(run).events()
    assert events[: len(before)] == before and len(events) == len(before) + 1
    recorded = events[-1]
    assert isinstance(recorded, ev.DecodeSpeedMeasured)
    assert (recorded.speedup_dual, recorded.dual_tokens_per_s, recorded.backend) == (
        1.8,
        180.0,
        "cpp",
    )
    assert (recorded.threads, recorded.tokens, recorded.device, recorded.same_tokens) == (
        1,
        8,
        "cpu",
        True,
    )
    assert recorded.date and recorded.layers[0]["shape"] == "64x64"
    assert recorded.t == before[-1].t  # after the run: no time added to it

    report = (run / "report.md").read_text()
    section = report[report.index("## Measured decode speed") :]
    assert report.index("## Estimated decode speedup bounds") < report.index(section[:30])
    assert "| dual-sparse | 180.0 | 1.80x |" in section
    assert "| activation-sparse only | 150.0 | 1.50x |" in section
    assert "| `64x64` | 4 | 6.0 1.00x [1.00x] |" in section and "2.5 2.40x [2.90x]" in section
    assert "backend cpp, 1 thread(s)" in section and "on cpu (float32)" in section
    printed = cli("report", "run", "-o", "-")
    assert printed.exit_code == 0 and printed.stdout == report

    again = cli("speed", "run", "--json")  # a second measurement: the report uses the latest
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["speedup_dual"] == 2.25
    assert [e.speedup_dual for e in speed_events(run)] == [1.8, 2.25]
    report = cli("report", "run", "-o", "-").stdout
    assert report.count("## Measured decode speed") == 1
    section = report[report.index("## Measured decode speed") : report.index("## Proxy")]
    assert "| dual-sparse | 225.0 | 2.25x |" in section and "1.80x" not in section
    assert "measured 2 times; this is the latest" in section


def test_a_model_target_records_nothing(cli: Cli, measured: list[str]) -> None:
    model = cli.root / "model"  # a model folder (config.json, no events.jsonl) is not a run
    model.mkdir()
    (model / "config.json").write_text("{}")
    for target in ("tiny-random", str(model)):
        result = cli("speed", target)
        assert result.exit_code == 0, result.stderr
        assert "recorded" not in result.stderr
    assert measured == ["tiny-random", str(model)]
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]


def test_a_running_run_is_refused_before_measuring(cli: Cli, measured: list[str]) -> None:
    live = RunDir.create(scripted.CONFIG, out=cli.root / "live")  # locked by this live process
    try:
        live.append(scripted.run_started())
        result = cli("speed", "live")
        assert result.exit_code == ExitCode.INPUT
        line = one_error_line(result.stderr)
        assert "is still running" in line and "once the run has ended" in line
        assert measured == [] and speed_events(live.path) == []
    finally:
        live.release()


def test_an_unwritable_run_is_refused_before_measuring(
    cli: Cli, measured: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("prune", *FAST, "--out", "run").exit_code == 0

    def refuse(path: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runstore, "_probe_writable", refuse)  # root ignores permission bits
    result = cli("speed", "run", "--json")
    assert result.exit_code == ExitCode.INPUT
    line = one_error_line(result.stderr)
    assert "not writable (Permission denied)" in line and "measure without recording" in line
    assert json.loads(result.stdout)["status"] == "failed"
    assert measured == [] and speed_events(cli.root / "run") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_a_read_only_run_dir_is_refused(cli: Cli, measured: list[str]) -> None:
    assert cli("prune", *FAST, "--out", "run").exit_code == 0
    run = cli.root / "run"
    run.chmod(0o500)
    try:
        result = cli("speed", "run")
    finally:
        run.chmod(0o700)
    assert result.exit_code == ExitCode.INPUT
    assert "not writable" in one_error_line(result.stderr)
    assert measured == []
