"""Issue 13 on the real default model: 64 greedy tokens through the sparse kernels.

A DuoGPT run of SmolLM2-135M at the default W50% + X50% (calibrated on 4 x 128 tokens to keep it
short: the masks' origin does not matter to the kernels, their shapes and the real activations
do), saved, reloaded by ``duogpt speed``'s loader, and decoded greedily for 64 tokens with the
KV cache: the activation-sparse and the dual-sparse kernels must give exactly the tokens of the
masked-dense model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duogpt_tui.cli import app
from solver.kernels import speed


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_64_tokens_of_the_default_model_match_the_masked_dense_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["prune", "--nsamples", "4", "--seqlen", "128", "--eval-windows", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    measured = speed.measure(str(run), tokens=64, layers=False, repeats=1)
    assert measured["tokens"] == 64
    assert measured["act_same_tokens"] is True
    assert measured["dual_same_tokens"] is True
    assert measured["same_tokens"] is True
