"""``duogpt prune --nproc 2``: the launcher runs two gloo ranks; this process records the run.

Exit codes and the run directory's ending go through the launcher as for one process: bad input
found by the ranks exits 2 with its one line, Ctrl-C stops every rank (130, cancelled), and a
rank that dies fails the run with one line, after which ``--resume`` finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from duogpt_tui.ranks import KILL_VARIABLE
from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import LayerSolved, PerplexityMeasured

SMALL = [
    "--model", "tiny-random", "--seqlen", "32", "--batch-size", "2", "--eval-windows", "2",
    "--no-eval-dense", "--no-save-model",
]  # fmt: skip
"""A tiny run (add --nsamples)."""

LAUNCHER_NOISE = ("Traceback", "ChildFailedError", "torch.distributed", "SIGTERM")
"""What the launcher's own output would show on stderr (it must not)."""


def _duogpt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``duogpt`` with ``args`` in a fresh interpreter."""
    command = [sys.executable, "-m", "duogpt_tui.cli", *args]
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """The run directory's events, as JSON objects."""
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _clean(stderr: str) -> None:
    """The launcher printed nothing of its own."""
    for noise in LAUNCHER_NOISE:
        assert noise not in stderr, stderr[-3000:]


def _launch_folders() -> set[str]:
    """The launch folders of ranks in the temporary directory."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("duogpt-ranks-*")}


def test_prune_with_two_ranks_writes_one_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    before = _launch_folders()
    done = _duogpt("prune", *SMALL, "--nsamples", "4", "--no-checkpoints", "--nproc", "2",
                   "--out", str(out), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _clean(done.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])  # one result only
    assert result["status"] == "finished"
    events = _events(out)
    started = next(e for e in events if e["kind"] == "run_started")
    assert started["config"]["nproc"] == 2
    assert sum(e["kind"] == "finished" for e in events) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert _launch_folders() <= before


def test_bad_input_found_by_the_ranks_exits_2_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # one batch of 2 sequences cannot be shared by 2 ranks: found once the ranks have started
    done = _duogpt("prune", *SMALL, "--nsamples", "2", "--nproc", "2", "--out", str(out))
    assert done.returncode == 2, done.stderr[-3000:]
    _clean(done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        "error: 1 calibration batches cannot feed 2 ranks: use more --nsamples, a smaller "
        "--batch-size, or fewer --nproc"
    ]
    last = _events(out)[-1]
    assert last["kind"] == "failed" and last["category"] == "input"
    assert last["error"] == errors[0].removeprefix("error: ")
    assert not (out / "run.lock").exists()


def test_ctrl_c_stops_every_rank_and_the_run_says_cancelled(tmp_path: Path) -> None:
    out = tmp_path / "run"
    before = _launch_folders()
    # the default model: its 30 blocks take about 40 s here, so the cancel lands in pruning
    command = [
        sys.executable, "-m", "duogpt_tui.cli", "prune", "--model", "smollm2-135m",
        "--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--eval-windows", "1",
        "--no-eval-dense", "--no-save-model", "--nproc", "2", "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 120
    while not (events.is_file() and "block_started" in events.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "no block started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the duogpt process
    asked = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()[-3000:]
    assert time.monotonic() - asked < 20  # at the next group of layers
    _clean(stderr.decode())
    assert stdout.decode().startswith("cancelled")
    recorded = _events(out)
    assert recorded[-1]["kind"] == "cancelled"
    assert recorded[-1]["reason"] == "cancelled while pruning"
    assert recorded[-1]["block"] < 10
    assert sum(e["kind"] in ("finished", "failed", "cancelled") for e in recorded) == 1
    assert not (out / "run.lock").exists()
    assert _launch_folders() <= before  # the ranks ended: their folder is gone


def _ppl(events: list[Any]) -> float:
    return next(e.ppl for e in events if isinstance(e, PerplexityMeasured) and e.label == "pruned")


def test_a_dead_rank_fails_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["prune", *SMALL, "--nsamples", "8", "--nproc", "2", "--out", str(out)]
    started = time.monotonic()
    done = _duogpt(*args, env={KILL_VARIABLE: "1:block=1"})
    assert done.returncode == 1, done.stderr[-3000:]
    assert time.monotonic() - started < 60  # stopped at once, not after the gloo timeout
    _clean(done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        "error: rank 1 died (killed by SIGKILL) in block 1; the other ranks were stopped: "
        f"continue the run with `duogpt prune --resume {out}` (from its last checkpointed block)"
    ]
    last = _events(out)[-1]
    assert last["kind"] == "failed" and last["block"] == 1
    assert (out / "checkpoints" / "state.json").is_file()

    resumed = _duogpt("prune", "--resume", str(out), "--json")  # with its 2 ranks again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert result["status"] == "finished"
    config = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    whole = list(stream(config.replace(nproc=1, checkpoints=False)))  # one rank, uninterrupted
    assert result["ppl"] == pytest.approx(_ppl(whole), rel=5e-3)
    sparsity = {
        (e["block"], e["name"]): e["weight_sparsity"]
        for e in _events(out)
        if e["kind"] == "layer_solved"
    }
    assert sparsity == {
        (e.block, e.name): e.weight_sparsity for e in whole if isinstance(e, LayerSolved)
    }
