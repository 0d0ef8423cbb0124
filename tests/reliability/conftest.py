"""Shared pieces of the reliability suite: the real CLI in-process, real child processes, models.

Every test runs the real solver on the built-in ``tiny-random`` model (or a copy of it saved to
a folder) with tiny settings (:data:`FAST`). Child processes cost seconds to start (torch and
transformers imports), so they come from one fork server (:mod:`.forkserver`) that pays the
imports once, and the tests that need a child share it where they can.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from duogpt_tui.runstore import pid_alive
from solver.io.models import tiny_random_model
from tests.cli.conftest import Cli, cli  # noqa: F401  (``cli``: duogpt with a fake solver)
from tests.reliability.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[2]

FAST = ("--model", "tiny-random", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2")
"""The smallest real run: two blocks of tiny-random, 4 x 32 calibration tokens, 2 eval windows."""


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


@pytest.fixture(scope="session")
def forkserver() -> Iterator[ForkServer]:
    """The suite's fork server for ``duogpt`` child processes (see :mod:`.forkserver`)."""
    server = ForkServer(ROOT)
    yield server
    server.close()


class Child:
    """``duogpt prune ARGS --out OUT --json`` in a child process, watched through its events.

    Attributes:
        pid: the child's pid.
        out: its run directory.
    """

    def __init__(self, server: ForkServer, cwd: Path, out: Path, *args: str) -> None:
        """Start the child (forked by ``server``) in ``cwd``."""
        self.server = server
        self.out = out
        self._stdout = cwd / f"{out.name}.stdout"
        self._stderr = cwd / f"{out.name}.stderr"
        command = ["prune", *args, "--out", str(out), "--json"]
        self.pid = server.start(cwd, self._stdout, self._stderr, command)
        self.code: int | None = None

    def alive(self) -> bool:
        """Whether the child still runs (an exited, unreaped child counts as ended)."""
        return self.code is None and pid_alive(self.pid)

    def sees(self, found: Callable[[list[dict[str, Any]]], bool]) -> bool:
        """Whether ``found(events)`` holds for the complete lines of ``events.jsonl`` now.

        Raises:
            AssertionError: the child has ended.
        """
        path = self.out / "events.jsonl"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").split("\n")[:-1]
            if found([json.loads(line) for line in lines if line]):
                return True
        if not self.alive():
            raise AssertionError(f"the child ended early: {self.wait()}")
        return False

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], timeout: float = 90) -> None:
        """Poll ``events.jsonl`` until ``found(events)`` holds (complete lines only)."""
        deadline = time.monotonic() + timeout
        while not self.sees(found):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out waiting in {self.out}")
            time.sleep(0.02)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the child to end (kill it after ``timeout``); (exit code, stdout, stderr)."""
        if self.code is None:
            deadline = time.monotonic() + timeout
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
            self.code = self.server.wait(self.pid)
        return self.code, self._stdout.read_text(), self._stderr.read_text()

    def signal(self, signum: int) -> tuple[int, str, str]:
        """Send ``signum`` and wait for the child; (exit code, stdout, stderr)."""
        os.kill(self.pid, signum)
        return self.wait()

    def kill(self) -> None:
        """``kill -9`` the child and reap it."""
        if self.code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()


@pytest.fixture
def child(tmp_path: Path, forkserver: ForkServer) -> Iterator[Callable[..., Child]]:
    """Start ``duogpt prune`` children in ``tmp_path``; any still running at the end is killed."""
    started: list[Child] = []

    def start(*args: str, out: str = "run") -> Child:
        started.append(Child(forkserver, tmp_path, tmp_path / out, *args))
        return started[-1]

    yield start
    for one in started:
        one.kill()


def has_kind(kind: str, **fields: Any) -> Callable[[list[dict[str, Any]]], bool]:
    """A predicate for :meth:`Child.wait_for`: an event of ``kind`` with these field values."""

    def found(events: list[dict[str, Any]]) -> bool:
        return any(
            e.get("kind") == kind and all(e.get(k) == v for k, v in fields.items()) for e in events
        )

    return found
