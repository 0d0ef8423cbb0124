"""Out of memory: a failed event that says where, how much and what to change; the pre-flight
estimate and its warning when the machine looks too small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.io import system
from solver.math import obc
from solver.run import estimate
from solver.run.estimate import block_memory
from tests.cli.conftest import Cli
from tests.reliability.conftest import FAST, one_error_line


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()],
    ids=["OutOfMemoryError", "MemoryError"],
)
def test_out_of_memory_in_a_block_is_one_actionable_line(
    real_cli: Cli, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(obc, "prune_obc", out_of_memory)
    result = real_cli("prune", *FAST, "--eval-windows", "0", "--out", "run")
    assert result.exit_code == 1
    need = block_memory(nsamples=4, seqlen=32, batch_size=8, hidden=64, intermediate=128)
    assert one_error_line(result.stderr) == (
        f"error: out of memory in block 0 on cpu ({type(error).__name__}); pruning a block needs "
        f"{need.describe()} on top of the model's 0.4 MB: use fewer --nsamples, a shorter "
        "--seqlen, a smaller --batch-size, or a machine with more memory"
    )
    failed = RunDir.open(real_cli.root / "run").events()[-1]
    assert isinstance(failed, ev.Failed) and failed.block == 0 and failed.category == "run"
    assert "Error" in failed.detail  # the traceback is kept for --debug and the log


def test_block_memory_grows_with_the_calibration_tokens() -> None:
    small = block_memory(nsamples=16, seqlen=256, batch_size=8, hidden=576, intermediate=1536)
    assert small.streams == pytest.approx(2 * 16 * 256 * 576 * 4 / 2**20)
    assert small.cached_inputs == pytest.approx(16 * 256 * (3 * 576 + 1536 + 1536) * 4 / 2**20)
    assert small.solver == pytest.approx((6 * 1536**2 + 4 * 1536 * 576) * 4 / 2**20)
    big = block_memory(nsamples=128, seqlen=2048, batch_size=8, hidden=576, intermediate=1536)
    assert big.streams == pytest.approx(small.streams * 64)
    assert big.total > 10 * small.total
    assert big.describe().startswith("about 6.3 GB (calibration streams 1.1 GB, ")


def test_estimate_of_the_default_run_uses_the_builtin_sizes() -> None:
    guess = estimate.estimate(RunConfig())
    assert guess.detail.startswith("134.5M params in float32 513 MB, calibration 16 x 256 tokens")
    assert 1024 < guess.memory_mb < 4096  # a few GB at most
    assert 60 < guess.seconds < 1800  # minutes on a 2-core CPU
    assert estimate.estimate(RunConfig(), device="cuda").seconds < guess.seconds / 10
    half = estimate.estimate(RunConfig(dtype="bfloat16"))
    assert half.memory_mb == pytest.approx(guess.memory_mb - 134_515_008 * 2 / 2**20, abs=0.2)


def test_estimate_takes_the_callers_sizes_and_copes_without_them() -> None:
    config = RunConfig(model="org/not-cached", nsamples=8, seqlen=128)
    unknown = estimate.estimate(config)
    assert unknown.seconds == 0 and "model size unknown" in unknown.detail
    known = estimate.estimate(config, n_params=10**9, hidden=2048, layers=16, intermediate=8192)
    assert known.detail.startswith("1000.0M params in float32 3.7 GB")
    more = estimate.estimate(config.replace(nsamples=64), 10**9, 2048, 16, 8192)
    assert more.memory_mb > known.memory_mb and more.seconds > known.seconds


def test_estimate_reads_a_model_folders_config(saved_tiny: Path) -> None:
    guess = estimate.estimate(RunConfig(model=str(saved_tiny)))
    assert guess.detail.startswith("0.1M params")


def test_the_preflight_line_and_no_warning(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 64_000.0)
    result = cli("prune", *FAST)
    assert result.exit_code == 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("pre-flight: about 402 MB of memory and ")
    assert first.endswith(" on cpu (0.1M params in float32 0.4 MB, calibration 4 x 32 tokens, "
                          "one block 1.1 MB; 20 GFLOP/s assumed on cpu); offload none "
                          "(none 402 MB, cpu 402 MB, disk 402 MB)")  # fmt: skip
    assert "warning: this run needs" not in result.stderr


def test_a_warning_when_the_machine_looks_too_small(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 300.0)
    result = cli("prune", *FAST)
    assert result.exit_code == 0  # a warning, not a refusal: the estimate is rough
    warnings = [line for line in result.stderr.splitlines() if "is available on" in line]
    assert warnings == [
        "warning: this run needs about 402 MB but only 300 MB is available on cpu: use fewer "
        "--nsamples, a shorter --seqlen, a smaller --batch-size, or a machine with more memory"
    ]


def test_available_memory_is_known_here() -> None:
    available = system.available_memory_mb()
    assert available is None or available > 0
