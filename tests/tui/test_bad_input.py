"""The setup screen's side of the bad-input matrix (issue 5): one Pilot test per case.

Each case types a bad value into the form (with the real pre-flight check behind the App) and
checks what the user sees and what does not happen: a one-line reason next to the field, and
``ctrl+r`` refusing with that line — no prepare or run worker started, no run directory made.
The runs folder cannot be typed in the form; it is refused at start, as one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input, Static
from textual.worker import Worker

from duogpt_tui import runner
from duogpt_tui.app import DuoGPTApp
from solver.config import RunConfig
from solver.io import system
from tests.tui.conftest import SIZE, wait_for

pytestmark = pytest.mark.anyio

BASE = RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=2, device="cpu")
"""A config that passes every check; each case spoils one field."""


def text_of(app: DuoGPTApp, selector: str) -> str:
    """The text a Static shows."""
    return str(app.screen.query_one(selector, Static).content)


def bert_folder(path: Path) -> Path:
    """A tiny encoder (BERT) saved with transformers: a model, but not a causal LM."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    return path


def text_file(path: Path, data: bytes) -> Path:
    """A calibration file with ``data`` in it."""
    path.write_bytes(data)
    return path


CASES: dict[str, tuple[Callable[[Path], dict[str, str]], str, str]] = {
    "model-path-missing": (
        lambda tmp: {"model": str(tmp / "no-such-model")},
        "model",
        "not found: give a built-in name",
    ),
    "model-dir-not-a-model": (
        lambda tmp: {"model": str(tmp)},
        "model",
        "is not a model folder (no config.json)",
    ),
    "model-not-causal": (
        lambda tmp: {"model": str(bert_folder(tmp / "bert"))},
        "model",
        "is a bert model (BertModel), not a causal language model",
    ),
    "calib-missing": (
        lambda tmp: {"calib": str(tmp / "missing.txt")},
        "calib",
        "is not a file",
    ),
    "calib-empty": (
        lambda tmp: {"calib": str(text_file(tmp / "empty.txt", b""))},
        "calib",
        "is empty: pass a file with text in it",
    ),
    "calib-binary": (
        lambda tmp: {"calib": str(text_file(tmp / "weights.txt", bytes(range(256)) * 64))},
        "calib",
        "looks binary (it contains NUL bytes)",
    ),
    "calib-not-utf8": (
        lambda tmp: {
            "calib": str(text_file(tmp / "latin1.txt", "café au lait ".encode("latin-1") * 999))
        },
        "calib",
        "is not UTF-8 (byte 0xe9",
    ),
    "weight-sparsity-above-1": (
        lambda tmp: {"weight_sparsity": "1.0"},
        "weight_sparsity",
        "--weight-sparsity must be a number in [0, 1), got 1.0",
    ),
    "act-sparsity-negative": (
        lambda tmp: {"act_sparsity": "-0.1"},
        "act_sparsity",
        "--act-sparsity must be a number in [0, 1), got -0.1",
    ),
    "sparsity-not-a-number": (
        lambda tmp: {"weight_sparsity": "half"},
        "weight_sparsity",
        "--weight-sparsity must be a number, got 'half'",
    ),
    "pattern-malformed": (
        lambda tmp: {"pattern": "4:2"},
        "pattern",
        "malformed pattern '4:2'",
    ),
    "seqlen-above-context": (
        lambda tmp: {"seqlen": "2048"},
        "seqlen",
        "--seqlen 2048 is longer than the model's context of 1024 tokens",
    ),
}
"""Case id -> (the fields to type, the field that must show the reason, part of the reason)."""


class Watch:
    """Records the groups of the workers that the App starts (a ``message_hook``)."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.groups: set[str] = set()

    def __call__(self, message: Message) -> None:
        """Note a worker's group when its state changes."""
        if isinstance(message, Worker.StateChanged):
            self.groups.add(message.worker.group)


async def assert_refused(
    app: DuoGPTApp, pilot: Pilot[Any], watch: Watch, runs_dir: Path, field: str, needle: str
) -> None:
    """The reason shows next to ``field`` in one line, and ctrl+r starts nothing."""
    await wait_for(pilot, lambda: needle in text_of(app, f"#reason-{field}"), timeout=30)
    reason = text_of(app, f"#reason-{field}")
    assert "\n" not in reason and "Traceback" not in reason
    assert app.screen.query_one(f"#reason-{field}").has_class("-error")
    await pilot.press("ctrl+r")
    await pilot.pause()
    assert app.current_mode == "setup" and not app.run_active
    assert app.start_error == f"cannot start: {reason}"
    assert text_of(app, "#start-error") == app.start_error
    assert not watch.groups & {"prepare", "prune"}
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_one_line_next_to_its_field(
    case: str, make_app: Callable[..., DuoGPTApp], runs_dir: Path, tmp_path: Path
) -> None:
    """Each bad value: its reason next to the field, and no run."""
    make_values, field, needle = CASES[case]
    values = make_values(tmp_path)
    watch = Watch()
    app = make_app(config=BASE, preflight=runner.preflight)
    async with app.run_test(size=SIZE, message_hook=watch) as pilot:
        for name, value in values.items():
            app.screen.query_one(f"#{name}", Input).value = value
        await assert_refused(app, pilot, watch, runs_dir, field, needle)


async def test_cuda_without_cuda(
    make_app: Callable[..., DuoGPTApp], runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--device cuda`` on a machine without CUDA: the reason shows next to the device."""
    monkeypatch.setattr(system, "cuda_available", lambda: False)
    watch = Watch()
    app = make_app(config=BASE.replace(device="cuda"), preflight=runner.preflight)
    async with app.run_test(size=SIZE, message_hook=watch) as pilot:
        await assert_refused(
            app, pilot, watch, runs_dir, "device", "--device cuda was asked for but CUDA is not"
        )


async def test_runs_folder_not_writable(make_app: Callable[..., DuoGPTApp], tmp_path: Path) -> None:
    """A runs folder under a regular file: refused at start in one line; nothing created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    runs_dir = blocker / "runs"
    watch = Watch()
    app = make_app(config=BASE, preflight=runner.preflight, runs_dir=runs_dir)
    async with app.run_test(size=SIZE, message_hook=watch) as pilot:
        await wait_for(pilot, lambda: "pre-flight: about" in text_of(app, "#preflight"))
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: bool(app.start_error) and not app.run_active, timeout=30)
        line = text_of(app, "#start-error")
        assert line.startswith(f"cannot start: cannot create the run directory {runs_dir}")
        assert "\n" not in line and "Traceback" not in line
        assert app.current_mode == "setup"
        assert "prepare" in watch.groups and "prune" not in watch.groups  # refused; no run
    assert blocker.read_text(encoding="utf-8") == "not a folder"
