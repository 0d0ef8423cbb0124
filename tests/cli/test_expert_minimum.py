"""Issue 11: the minimum of calibration tokens an expert needs for the second-order solve is
stated to the user: in the README's families paragraph, and in the warning that the events and
the report carry when an expert falls back to Wanda (magnitude when it got no token)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.run.experts import MIN_EXPERT_TOKENS
from tests.cli.conftest import Cli
from tests.solver.families import save_tiny, write_texts

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_states_the_minimum() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"fewer than {MIN_EXPERT_TOKENS} calibration tokens is pruned with Wanda" in text


def test_thin_experts_are_named_with_the_minimum_and_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 calibration tokens routed top-2 over 4 experts: 8 per expert on average, so some
    expert slices get fewer than the minimum with the real constant."""
    texts = write_texts(tmp_path)
    folder = save_tiny("mixtral", tmp_path / "mixtral")
    monkeypatch.chdir(tmp_path)
    cli = Cli(tmp_path, monkeypatch, fake=False)
    result = cli(
        "prune", "--model", str(folder), "--calib", str(texts["calib"]),
        "--eval", str(texts["eval"]), "--nsamples", "1", "--seqlen", "16",
        "--eval-windows", "1", "--batch-size", "1", "--no-eval-dense", "--out", "run",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "run"
    warnings = [
        e.text
        for e in RunDir.open(run).events()
        if isinstance(e, ev.Note) and e.level == "warning" and "second-order" in e.text
    ]
    assert warnings
    stated = f"fewer than {MIN_EXPERT_TOKENS} calibration tokens"
    assert all(stated in text and "with Wanda" in text for text in warnings)
    counts = [int(n) for text in warnings for n in re.findall(r"\((\d+): wanda\)", text)]
    assert counts and all(0 < n < MIN_EXPERT_TOKENS for n in counts)
    report = " ".join((run / "report.md").read_text(encoding="utf-8").split())
    assert stated in report
