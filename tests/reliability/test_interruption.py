"""Ctrl-C (SIGINT) and SIGTERM in every phase of a real run, in real child processes.

Six children run ``duogpt prune`` on tiny-random at once (forked by the suite's fork server):
for each phase (loading, pruning, evaluation) and each signal, the module fixture watches the
child's ``events.jsonl`` until the phase begins and then signals it. The tests check what the
user is left with: exit code 130, one final ``cancelled`` event that says where the run
stopped, a report that says the same, and no lock. The phases are long enough to be hit
reliably: loading reads a model folder from disk, and the evaluation has 400 windows.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from duogpt_tui.runstore import RunDir
from tests.reliability.conftest import FAST, Child, events_of, has_kind
from tests.reliability.forkserver import ForkServer

PHASES: dict[str, tuple[tuple[str, ...], Callable[[list[dict[str, Any]]], bool]]] = {
    "loading": (("--model", "{saved}"), has_kind("progress", phase="load")),
    "pruning": (("--eval-windows", "0"), has_kind("block_started", block=0)),
    "evaluating": (
        ("--eval-windows", "400", "--seqlen", "128"),
        has_kind("progress", phase="eval", label="dense"),
    ),
}
"""Per phase: the extra options of its child, and when the phase has begun."""

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@dataclass
class Stopped:
    """What a signalled child left: exit code, stdout, stderr, its run directory."""

    code: int
    stdout: str
    stderr: str
    out: Path


@pytest.fixture(scope="module")
def stopped(
    tmp_path_factory: pytest.TempPathFactory, saved_tiny: Path, forkserver: ForkServer
) -> Iterator[dict[tuple[str, str], Stopped]]:
    """Start the six children together, signal each in its phase, and collect them."""
    root = tmp_path_factory.mktemp("signals")
    children: dict[tuple[str, str], Child] = {}
    for phase, (extra, _) in PHASES.items():
        for name in SIGNALS:
            args = [a.replace("{saved}", str(saved_tiny)) for a in extra]
            out = root / f"{phase}-{name}"
            children[phase, name] = Child(forkserver, root, out, *FAST, *args)
    try:
        waiting = dict(children)
        deadline = time.monotonic() + 120
        while waiting and time.monotonic() < deadline:
            for key, child in list(waiting.items()):
                if child.sees(PHASES[key[0]][1]):
                    os.kill(child.pid, SIGNALS[key[1]])
                    del waiting[key]
            time.sleep(0.02)
        assert not waiting, f"never reached their phase: {sorted(waiting)}"
        results = {key: Stopped(*child.wait(), child.out) for key, child in children.items()}
        yield results
    finally:
        for child in children.values():
            child.kill()


def check_cancelled(result: Stopped) -> tuple[dict[str, Any], str]:
    """The promises common to every phase; return (the final event, report.md)."""
    assert result.code == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["status"] == "cancelled"
    assert "cancelled; the run directory says where it stopped" in result.stderr
    events = events_of(result.out)
    final = [e for e in events if e["kind"] in ("finished", "cancelled", "failed")]
    assert final == [events[-1]] and final[0]["kind"] == "cancelled"
    assert RunDir.open(result.out).status() == "cancelled"
    assert not (result.out / "run.lock").exists()
    return final[0], (result.out / "report.md").read_text()


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_while_loading(stopped: dict[tuple[str, str], Stopped], name: str) -> None:
    result = stopped["loading", name]
    final, report = check_cancelled(result)
    assert final["block"] == -1
    assert final["reason"].startswith("cancelled while loading the")
    assert "run_started" not in [e["kind"] for e in events_of(result.out)]
    assert "**Status: cancelled** before pruning (cancelled while loading the" in report


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_while_pruning(stopped: dict[tuple[str, str], Stopped], name: str) -> None:
    final, report = check_cancelled(stopped["pruning", name])
    assert (final["block"], final["reason"]) == (0, "cancelled while pruning")
    assert "**Status: cancelled** at block 0 of 2 (cancelled while pruning)" in report
    assert "0 block(s) were pruned" in report


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_while_evaluating(stopped: dict[tuple[str, str], Stopped], name: str) -> None:
    final, report = check_cancelled(stopped["evaluating", name])
    assert (final["block"], final["reason"]) == (-1, "cancelled during the dense evaluation")
    assert "**Status: cancelled** before pruning (cancelled during the dense evaluation)" in report
