"""Fixtures for the CLI tests: a private working directory and a fake solver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from duogpt_tui import runner
from duogpt_tui.cli import app


class Cli:
    """Runs ``duogpt`` in-process with a replaceable event source.

    Attributes:
        root: the working directory (runs go to ``root / "runs"``).
        configs: the configs the fake source was called with.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, fake: bool = True) -> None:
        """Work in ``root``; with ``fake``, a fake solver yields a finished run."""
        from tests.report import scripted

        self.root = root
        self.configs: list[Any] = []
        self._monkeypatch = monkeypatch
        self._runner = CliRunner()
        if fake:
            self.use(scripted.finished_run())
            monkeypatch.setattr(runner, "preflight", lambda config: config.validate())

    def use(self, events_or_source: list[Any] | Callable[..., Any]) -> None:
        """Make the next runs yield these events (or use this source)."""
        from tests.report import scripted

        if callable(events_or_source):
            source = events_or_source
        else:
            source = scripted.scripted_source(events_or_source, self.configs.append)
        self._monkeypatch.setattr(runner, "pipeline_source", lambda: source)

    def __call__(self, *args: str) -> Any:
        """Invoke ``duogpt ARGS``; the result has separate ``stdout`` and ``stderr``."""
        return self._runner.invoke(app, list(args))

    def run_dirs(self) -> list[Path]:
        """The run directories made under ``root / "runs"``."""
        runs = self.root / "runs"
        return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``duogpt`` with a fake solver, working in a fresh temporary folder."""
    monkeypatch.chdir(tmp_path)
    return Cli(tmp_path, monkeypatch)
