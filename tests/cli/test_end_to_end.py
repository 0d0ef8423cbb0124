"""``duogpt`` for real: the tiny-random model through the real pipeline, and real signals.

The pipeline tests use the built-in ``tiny-random`` model (seconds on a CPU). The signal tests run
``duogpt prune`` in a child process with a fake solver that waits for the cancel token, and
send it SIGINT / SIGTERM like a user (or a job scheduler) would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duogpt_tui.runstore import RunDir
from solver import events as ev
from tests.cli.conftest import Cli
from tests.cli.test_cli import FAST, one_error_line, one_json

ROOT = Path(__file__).resolve().parents[2]

pipeline = pytest.importorskip("solver.run.pipeline")


@pytest.fixture
def real_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``duogpt`` with the real solver, working in a fresh temporary folder."""
    monkeypatch.chdir(tmp_path)
    return Cli(tmp_path, monkeypatch, fake=False)


def test_prune_tiny_random_end_to_end(real_cli: Cli) -> None:
    result = real_cli("prune", *FAST, "--out", "run", "--json")
    assert result.exit_code == 0, result.stderr
    data = one_json(result.stdout)
    assert data["status"] == "finished" and data["run_dir"] == "run"
    assert data["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert data["act_sparsity"] == pytest.approx(0.5, abs=0.05)
    assert all(data[key] > 1 for key in ("ppl_dense", "ppl_dense_act", "ppl"))
    run = real_cli.root / "run"
    for name in ("config.json", "events.jsonl", "report.md", "model"):
        assert (run / name).exists(), name
    assert not (run / "run.lock").exists()
    events = RunDir.open(run).events()
    kinds = [e.kind for e in events if not isinstance(e, ev.Progress)]
    assert kinds[0] == "run_started" and kinds[-1] == "finished"
    assert [e for e in events if ev.is_terminal(e)] == [events[-1]]
    assert "perplexity (pruned)" in result.stderr

    original = (run / "report.md").read_bytes()
    assert real_cli("report", "run").exit_code == 0
    assert (run / "report.md").read_bytes() == original

    evaluated = real_cli("eval", "run", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert one_json(evaluated.stdout)["ppl"] == pytest.approx(data["ppl"], rel=1e-3)

    listed = one_json(real_cli("runs", "--runs-dir", ".", "--json").stdout)
    assert [row["run_id"] for row in listed["runs"]] == ["run"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "/no/such/model"), "model '/no/such/model' not found"),
        (("--calib", "missing.txt"), "--calib 'missing.txt' is not a file"),
    ],
)
def test_real_preflight_rejects_bad_input(
    real_cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = real_cli("prune", *FAST, *args)
    assert result.exit_code == 2
    assert message in one_error_line(result.stderr)
    assert real_cli.run_dirs() == []


# --------------------------------------------------------------------- real signals

CHILD = """
import sys
from duogpt_tui import runner
from tests.report import scripted
runner.preflight = lambda config: config.validate()
honour = sys.argv.pop(1) == "honour"
runner.pipeline_source = lambda: scripted.waiting_source(honour_cancel=honour)
from duogpt_tui.cli import main
main()
"""


def start_child(tmp_path: Path, honour: bool) -> tuple[subprocess.Popen[str], Path]:
    """Start ``duogpt prune --json --out RUN`` with a waiting fake solver; wait until it runs."""
    out = tmp_path / "run"
    mode = "honour" if honour else "ignore"
    command = [sys.executable, "-c", CHILD, mode, "prune", *FAST, "--out", str(out), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120  # a loaded machine imports torch slowly
    while time.monotonic() < deadline:
        events = out / "events.jsonl"
        if events.is_file() and "block_started" in events.read_text():
            return child, out
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    child.kill()
    raise AssertionError("the child never started block 0")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_with_exit_130(tmp_path: Path, signum: int) -> None:
    child, out = start_child(tmp_path, honour=True)
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert json.loads(stdout)["status"] == "cancelled"
    assert "Traceback" not in stderr
    run = RunDir.open(out)
    assert run.status() == "cancelled"
    assert "**Status: cancelled** at block 0 of 2" in (out / "report.md").read_text()
    assert not (out / "run.lock").exists()


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    child, out = start_child(tmp_path, honour=False)
    child.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert child.poll() is None, "the first Ctrl-C only asks the solver to stop"
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert json.loads(stdout)["status"] == "cancelled"
    events = RunDir.open(out).events()
    assert isinstance(events[-1], ev.Cancelled)
    assert (out / "report.md").is_file() and not (out / "run.lock").exists()
