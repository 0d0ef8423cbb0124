"""Fixtures of the TUI tests: an App factory with a fake source, waiting, scripted run dirs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runstore import RunDir
from solver.config import RunConfig
from solver.events import Event
from tests.tui.fakes import CATALOG, FakeSource, scripted_events

SIZE = (120, 40)
"""Terminal size of every Pilot test and snapshot."""


def no_preflight(config: RunConfig) -> None:
    """A pre-flight check that only validates the config (the fake source needs no files)."""
    config.validate()


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 10) -> None:
    """Let the app run until ``condition()`` holds.

    Raises:
        AssertionError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        await pilot.pause(0.05)


def write_run(
    root: Path, name: str, config: RunConfig, events: Iterable[Event] | None = None, **kw: Any
) -> Path:
    """A finished run directory ``root/name`` written through the run store.

    Args:
        root: the runs folder.
        name: the directory's name.
        config: the run's configuration.
        events: the events (default: :func:`scripted_events` of ``config`` with ``kw``).
    """
    run_dir = RunDir.create(config, out=root / name)
    try:
        for event in events if events is not None else scripted_events(config, **kw):
            run_dir.append(event)
    finally:
        run_dir.release()
    return run_dir.path


def model_folder(path: Path) -> Path:
    """A folder that passes the pre-flight's cheap model checks (a LLaMA config, a tokenizer file,
    a complete but empty safetensors file) without being loadable: for setup tests."""
    path.mkdir(parents=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 260,
        "max_position_embeddings": 1024,
    }
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "tokenizer.json").write_text("{}", encoding="utf-8")
    header = b"{}"
    (path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """An empty runs folder."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def make_app(runs_dir: Path) -> Callable[..., DuoGPTApp]:
    """Build a workbench with a fake source, a fixed catalog and the test's runs folder."""

    def build(source: Any = None, **kw: Any) -> DuoGPTApp:
        """The App, with ``kw`` overriding the test defaults."""
        options: dict[str, Any] = {
            "source": source if source is not None else FakeSource(),
            "preflight": no_preflight,
            "catalog": CATALOG,
            "runs_dir": runs_dir,
            "config": RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=4),
        }
        options.update(kw)
        return DuoGPTApp(**options)

    return build


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (Textual's loop), through anyio's pytest plugin."""
    return "asyncio"
