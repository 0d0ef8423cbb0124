"""Numerical health: Cholesky retries, NaN/Inf in weights, statistics and outputs, dead input
channels, and half-precision models whose solver math stays in float32.

The runs are real (tiny-random, :data:`FAST`-sized); the trouble is made by damaging the model
(a NaN weight saved to disk, a zeroed norm weight, a forward hook that emits NaN) or by making
the Cholesky factorisation fail, never by a fake solver.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from duogpt_tui.runner import stream
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.io import models
from solver.io.models import LoadedModel, tiny_random_model
from solver.math import obc
from tests.cli.conftest import Cli
from tests.reliability.conftest import FAST, one_error_line

TINY = RunConfig(
    model="tiny-random", nsamples=4, seqlen=32, eval_windows=0, batch_size=2, save_model=False
)
"""A real run without evaluation: the fastest way through every block."""

NO_EVAL = ("--eval-windows", "0", "--no-save-model", "--no-checkpoints")


def fake_loader(
    monkeypatch: pytest.MonkeyPatch, damage: Callable[[nn.Module], object]
) -> LoadedModel:
    """Make the pipeline load a tiny-random model damaged by ``damage``; return it."""
    loaded = tiny_random_model(seed=0)
    damage(loaded.model)
    monkeypatch.setattr(models, "load_model", lambda spec, **kwargs: loaded)
    return loaded


def nan_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """A forward hook that makes a module's output NaN."""
    return torch.full_like(output, math.nan)


def failed(events: list[ev.Event]) -> ev.Failed:
    """The run's terminal event, which must be a failure."""
    assert sum(ev.is_terminal(e) for e in events) == 1
    assert isinstance(events[-1], ev.Failed), events[-1]
    return events[-1]


def failed_run(config: RunConfig) -> ev.Failed:
    """Run the pipeline, which must stop early; the failure the runner makes for it."""
    return failed(list(stream(config)))


# --------------------------------------------------------------------------------------------
# Cholesky


def test_a_cholesky_failure_retries_with_more_damping(
    real_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = obc.inverse_cholesky_upper
    calls: list[int] = []

    def fails_once(H: torch.Tensor) -> torch.Tensor | None:
        calls.append(1)
        return None if len(calls) == 1 else real(H)

    monkeypatch.setattr(obc, "inverse_cholesky_upper", fails_once)
    result = real_cli("prune", *FAST, *NO_EVAL, "--out", "run")
    assert result.exit_code == 0, result.stderr
    layers = [
        e for e in RunDir.open(real_cli.root / "run").events() if isinstance(e, ev.LayerSolved)
    ]
    assert (layers[0].block, layers[0].name) == (0, "self_attn.q_proj")
    base = RunConfig().damping  # the default; a failure retries with ten times it
    assert layers[0].damping == pytest.approx(10 * base) and layers[0].retries == 1
    assert all(e.damping == pytest.approx(base) and e.retries == 0 for e in layers[1:])
    report = (real_cli.root / "run" / "report.md").read_text()
    row = next(line for line in report.splitlines() if "| `self_attn.q_proj` |" in line)
    assert row.rstrip().endswith(f"| {10 * base:g} | 1 |"), row


def test_a_cholesky_failure_at_any_damping_fails_naming_the_layer(
    real_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(obc, "inverse_cholesky_upper", lambda H: None)
    result = real_cli("prune", *FAST, *NO_EVAL, "--out", "run")
    assert result.exit_code == 1
    last = RunConfig().damping * 10**4  # the default after four tenfold retries
    assert one_error_line(result.stderr) == (
        "error: block 0 self_attn.q_proj: Cholesky factorisation failed for a 64x64 Hessian "
        f"even with damping {last:g}; raise --damping or use more calibration samples"
    )
    report = (real_cli.root / "run" / "report.md").read_text()
    assert "**Status: failed** at block 0 of 2 (run error): block 0 self_attn.q_proj:" in report


# --------------------------------------------------------------------------------------------
# NaN / Inf


def test_a_nan_weight_in_the_model_file_stops_the_run(real_cli: Cli) -> None:
    loaded = tiny_random_model(seed=0)
    with torch.no_grad():
        loaded.model.model.layers[1].mlp.down_proj.weight[3, 5] = math.nan
    folder = real_cli.root / "nan-model"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    result = real_cli("prune", *FAST, "--model", str(folder), "--out", "run", "--json")
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        "error: block 1 mlp.down_proj: the model's weights hold NaN/Inf before pruning; the "
        "model file is damaged: load another copy of the model"
    )
    events = RunDir.open(real_cli.root / "run").events()
    assert failed(events).block == 1 and failed(events).category == "run"
    assert not any(isinstance(e, ev.LayerSolved) for e in events)
    assert json.loads(result.stdout)["status"] == "failed"


def test_nan_in_the_statistics_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_loader(
        monkeypatch,
        lambda m: m.get_submodule("model.layers.0.post_attention_layernorm").register_forward_hook(
            nan_output
        ),
    )
    end = failed_run(TINY)
    assert end.block == 0
    assert end.error.startswith("block 0 mlp.gate_proj: calibration statistics hold NaN/Inf")


def test_nan_in_a_blocks_output_stops_the_run(
    real_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_loader(
        monkeypatch,
        lambda m: m.get_submodule("model.layers.1.mlp").register_forward_hook(nan_output),
    )
    result = real_cli("prune", *FAST, *NO_EVAL, "--out", "run")
    assert result.exit_code == 1
    assert one_error_line(result.stderr).startswith(
        "error: block 1: the dense stream holds NaN/Inf after the block"
    )
    events = RunDir.open(real_cli.root / "run").events()
    assert failed(events).block == 1
    assert [e.block for e in events if isinstance(e, ev.BlockFinished)] == [0]
    # --no-checkpoints: block 0 was not checkpointed, so there is nothing to resume
    assert not (real_cli.root / "run" / "checkpoints").exists()
    resumed = real_cli("prune", "--resume", "run")
    assert resumed.exit_code == 2
    assert "ran with --no-checkpoints; start a new run" in one_error_line(resumed.stderr)


def test_nan_in_the_outputs_stops_the_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_loader(monkeypatch, lambda m: m.get_submodule("lm_head").register_forward_hook(nan_output))
    end = failed_run(TINY.replace(eval_windows=2))
    assert end.block == -1 and "perplexity is not finite" in end.error


# --------------------------------------------------------------------------------------------
# dead channels and dtypes


def test_dead_input_channels_are_pruned_without_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    def kill_channel(model: nn.Module) -> None:
        with torch.no_grad():
            model.get_parameter("model.layers.0.post_attention_layernorm.weight")[5] = 0.0

    loaded = fake_loader(monkeypatch, kill_channel)
    events = list(stream(TINY))
    assert isinstance(events[-1], ev.Finished), events[-1]
    mlp = loaded.model.model.layers[0].mlp
    for name in ("gate_proj", "up_proj"):
        weight = getattr(mlp, name).weight
        assert bool(torch.all(weight[:, 5] == 0)), name  # the dead input's column is pruned
        assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    solved = [e for e in events if isinstance(e, ev.LayerSolved)]
    assert all(math.isfinite(e.error_after) and e.retries == 0 for e in solved)


def test_bfloat16_keeps_the_solver_math_in_float32(
    real_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    real = obc.prune_obc

    def spy(weight: torch.Tensor, H: torch.Tensor, **kwargs: Any) -> Any:
        seen.append((weight.dtype, H.dtype))
        return real(weight, H, **kwargs)

    monkeypatch.setattr(obc, "prune_obc", spy)
    result = real_cli("prune", *FAST, "--dtype", "bfloat16", "--out", "run", "--json")
    assert result.exit_code == 0, result.stderr
    events = RunDir.open(real_cli.root / "run").events()
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.dtype == "bfloat16" and started.config["dtype"] == "bfloat16"
    assert len(seen) == 14 and set(seen) == {(torch.float32, torch.float32)}
    data = json.loads(result.stdout)
    assert all(math.isfinite(data[k]) for k in ("ppl_dense", "ppl"))
    saved = json.loads((real_cli.root / "run" / "model" / "config.json").read_text())
    assert "bfloat16" in (saved.get("dtype"), saved.get("torch_dtype"))


def test_dtype_is_checked(real_cli: Cli) -> None:
    result = real_cli("prune", *FAST, "--dtype", "float8")
    assert result.exit_code == 2
    assert "unknown dtype 'float8'" in one_error_line(result.stderr)


def test_saved_nan_model_folder_passes_the_preflight(tmp_path: Path) -> None:
    """The pre-flight reads headers, not values: the NaN is the run's to find (block, layer)."""
    from solver.io.inputs import check_model

    loaded = tiny_random_model(seed=0)
    with torch.no_grad():
        loaded.model.model.embed_tokens.weight[0, 0] = math.inf
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    assert check_model(str(tmp_path)).hidden == 64
    end = failed_run(TINY.replace(model=str(tmp_path)))
    assert end.error.startswith("model.embed_tokens.weight: the model's weights hold NaN/Inf")
