"""The GPU check (issue 14 item 4), run here on the CPU with ``--quick``; on CUDA when present."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks import common, gpu_check

PARITY_MAX_DIFF = 1e-3
"""The largest relative weight difference a quick parity row may show (float32 rounding of a
256x256 solve without a flipped mask entry is ~1e-6)."""


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The options that pin the check to one torch thread, undone after the test."""
    monkeypatch.setenv(common.THREADS_ENV, "1")  # the check sets it; monkeypatch restores it
    threads = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(threads)


def section(text: str, title: str) -> str:
    """The Markdown section whose heading starts with ``## title``."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, keyed by the header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def run_check(tmp_path: Path, *options: str) -> str:
    """Run the check's main in this process; its Markdown (after checking that it was written)."""
    out = tmp_path / "check.md"
    assert gpu_check.main([*options, "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def assert_parity(text: str, device: str) -> None:
    rows = table_rows(section(text, "1. Layer-solve parity"))
    assert {row["method"] for row in rows} == {"duogpt", "sparsegpt"}
    assert any(row["solve"] == f"device float32 ({device})" for row in rows)
    for row in rows:
        assert row["verdict"] == "pass", row
        assert float(row["max rel. diff"]) < PARITY_MAX_DIFF, row
        assert float(row["objective rel. diff"]) <= gpu_check.OBJECTIVE_TOLERANCE, row
        assert float(row["mask agreement"].rstrip("%")) >= 100 * gpu_check.MASK_TOLERANCE, row


def assert_timings(text: str) -> None:
    rows = table_rows(section(text, "3. Layer-solve timings"))
    shapes = {f"{r}x{c}" for r, c in gpu_check.QUICK_PLAN.timing_shapes}
    assert {(row["layer (rows x cols)"], row["method"]) for row in rows} == {
        (shape, method) for shape in shapes for method in ("duogpt", "sparsegpt")
    }
    for row in rows:
        assert row["timed calls"] == "3", row
        for column in ("median ms", "min ms", "max ms", "warm-up ms"):
            value = float(row[column])
            assert math.isfinite(value) and value > 0, (column, row)
        if row["method"] == "duogpt":
            assert float(row["DuoGPT / SparseGPT"].rstrip("x")) > 0, row


def test_quick_check_on_the_cpu_writes_parity_and_timings(
    tmp_path: Path, one_thread: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = run_check(tmp_path, "--device", "cpu", "--quick", "--skip-model", *one_thread)
    assert text.startswith("# GPU check")
    assert capsys.readouterr().out.strip() == text.strip(), "the Markdown goes to stdout too"
    assert "| device | cpu |" in section(text, "Device")
    assert f"| torch | {torch.__version__} |" in text
    assert_parity(text, "cpu")
    assert "Skipped (`--skip-model`)" in section(text, "2. The default run")
    assert_timings(text)
    assert "Nothing was skipped." in section(text, "Budget")


@pytest.mark.slow  # the quick model is cut from the real default model
def test_quick_check_runs_the_default_run_through_the_product_path(
    tmp_path: Path, one_thread: list[str]
) -> None:
    text = run_check(tmp_path, "--device", "cpu", "--quick", *one_thread)
    figures = {
        row["figure"]: row["value"]
        for row in table_rows(section(text, "2. The default run on the device"))
    }
    assert figures["status"] == "finished", figures
    for key in ("perplexity (pruned)", "solve s (sum over layers)", "wall s"):
        assert math.isfinite(float(figures[key])), (key, figures)
    assert float(figures["peak memory MB (process RSS)"]) > 0
    assert figures["weight sparsity"] == "50.0%"
    assert_parity(text, "cpu")
    assert_timings(text)


def test_an_exhausted_budget_skips_and_says_so(tmp_path: Path, one_thread: list[str]) -> None:
    text = run_check(
        tmp_path, "--device", "cpu", "--quick", "--skip-model", "--budget", "0", *one_thread
    )
    assert_parity(text, "cpu")  # the first parity layer always runs
    rows = table_rows(section(text, "3. Layer-solve timings"))
    assert rows and all(row["timed calls"] == "skipped" for row in rows)
    budget = section(text, "Budget")
    assert budget.count("skipped") == len(rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check.md"
    assert gpu_check.main(["--device", "cuda", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "--device cpu" in lines[0]
    assert not out.exists()


def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--device", "cpu", "--repeats", "2"]) == 2
    assert gpu_check.main(["--device", "tpu"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_check_on_cuda(tmp_path: Path, one_thread: list[str]) -> None:
    text = run_check(tmp_path, "--device", "cuda", "--quick", *one_thread)
    assert torch.cuda.get_device_name() in section(text, "Device")
    assert_parity(text, "cuda")
    assert_timings(text)
    figures = {
        row["figure"]: row["value"]
        for row in table_rows(section(text, "2. The default run on the device"))
    }
    assert figures["status"] == "finished", figures
    assert float(figures["peak device memory MB (allocator)"]) > 0
