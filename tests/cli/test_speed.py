"""``duogpt speed``: bad input exits 2 with one line; the table and JSON (measurement faked)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from duogpt_tui import cli_speed
from duogpt_tui.cli import app
from solver.errors import InputError

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
