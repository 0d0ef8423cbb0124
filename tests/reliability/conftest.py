"""Shared pieces of the reliability suite: the real CLI in-process, real child processes, models.

Every test runs the real solver on the built-in ``tiny-random`` model (or a copy of it saved to
a folder) with tiny settings (:data:`FAST`). Child processes cost seconds to start (torch and
transformers imports), so the tests that need one share it where they can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from solver.models import tiny_random_model
from tests.cli.conftest import Cli

ROOT = Path(__file__).resolve().parents[2]

FAST = ("--model", "tiny-random", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2")
"""The smallest real run: two blocks of tiny-random, 4 x 32 calibration tokens, 2 eval windows."""

CHILD = "from duogpt_tui.cli import main; main()"
"""``duogpt`` in a child interpreter (the console script may not be on PATH)."""


@pytest.fixture
def real_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``duogpt`` in-process with the real solver and pre-flight, in a fresh temporary folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Cli(tmp_path, monkeypatch, fake=False)


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny-random`` saved as a Hugging Face folder (model + tokenizer); do not modify it."""
    folder = tmp_path_factory.mktemp("models") / "tiny-saved"
    loaded = tiny_random_model(seed=0)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def one_error_line(stderr: str) -> str:
    """stderr must hold exactly one ``error:`` line and no traceback; return that line."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def events_of(run: Path) -> list[dict[str, Any]]:
    """Every line of ``run/events.jsonl`` parsed as JSON (each line must be valid on its own)."""
    text = (run / "events.jsonl").read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "events.jsonl ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]


def kinds(run: Path) -> list[str]:
    """The kinds of the run's events, progress left out."""
    return [e["kind"] for e in events_of(run) if e["kind"] != "progress"]


class Child:
    """``duogpt prune ARGS`` in a child process, watched through its ``events.jsonl``.

    Attributes:
        proc: the child.
        out: its run directory.
    """

    def __init__(self, cwd: Path, out: Path, *args: str) -> None:
        """Start the child with ``--out out`` and ``args``."""
        self.out = out
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-c", CHILD, "prune", *args, "--out", str(out), "--json"]
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> None:
        """Poll ``events.jsonl`` until ``found(events)`` is true (complete lines only)."""
        deadline = time.monotonic() + timeout
        path = self.out / "events.jsonl"
        while time.monotonic() < deadline:
            if path.is_file():
                lines = path.read_text(encoding="utf-8").split("\n")[:-1]
                if found([json.loads(line) for line in lines if line]):
                    return
            if self.proc.poll() is not None:
                raise AssertionError(f"the child ended early: {self.proc.communicate()}")
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"timed out waiting in {path}")

    def signal(self, signum: int) -> tuple[int, str, str]:
        """Send ``signum`` and wait for the child; return (exit code, stdout, stderr)."""
        self.proc.send_signal(signum)
        stdout, stderr = self.proc.communicate(timeout=60)
        return self.proc.returncode, stdout, stderr

    def kill(self) -> None:
        """``kill -9`` the child and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start ``duogpt prune`` children in ``tmp_path``; any still running at the end is killed."""
    started: list[Child] = []

    def start(*args: str, out: str = "run") -> Child:
        started.append(Child(tmp_path, tmp_path / out, *args))
        return started[-1]

    yield start
    for one in started:
        if one.proc.poll() is None:
            one.kill()


def has_kind(kind: str, **fields: Any) -> Callable[[list[dict[str, Any]]], bool]:
    """A predicate for :meth:`Child.wait_for`: an event of ``kind`` with these field values."""

    def found(events: list[dict[str, Any]]) -> bool:
        return any(
            e.get("kind") == kind and all(e.get(k) == v for k, v in fields.items()) for e in events
        )

    return found
