"""Issue 11: ``duogpt eval RUN_DIR`` reloads a bfloat16 run in bfloat16, to the run's perplexity.

The run directory records its dtype (``activation_sparsity.json``; the model's ``config.json``
for runs saved before it did), and evaluation loads the saved model in it: in float32 the same
bfloat16 weights give another perplexity (255.04 against the run's 255.06 on this model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.run.evaluate import run_dtype
from tests.cli.conftest import Cli
from tests.cli.test_cli import one_json
from tests.solver.families import save_tiny, write_texts


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A bfloat16 copy of the tiny llama, pruned with ``--dtype bfloat16`` (model saved)."""
    root = tmp_path_factory.mktemp("bf16")
    texts = write_texts(root)
    folder = save_tiny("llama", root / "llama-bf16", dtype=torch.bfloat16)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        cli = Cli(root, monkeypatch, fake=False)
        result = cli(
            "prune", "--model", str(folder), "--dtype", "bfloat16", "--save-model",
            "--calib", str(texts["calib"]), "--eval", str(texts["eval"]),
            "--weight-sparsity", "0.5", "--act-sparsity", "0.5", "--nsamples", "4",
            "--seqlen", "32", "--eval-windows", "2", "--batch-size", "2", "--out", "run",
            "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return root / "run", one_json(result.stdout)


def _eval(run: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(run.parent)
    result = Cli(run.parent, monkeypatch, fake=False)("eval", str(run), "--json")
    assert result.exit_code == 0, result.stderr
    return one_json(result.stdout)


def _recorded_pruned_ppl(run: Path) -> float:
    events = RunDir.open(run).events()
    return next(
        e.ppl for e in events if isinstance(e, ev.PerplexityMeasured) and e.label == "pruned"
    )


def test_eval_reloads_a_bfloat16_run_to_its_perplexity(
    bf16_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, data = bf16_run
    assert json.loads((run / "model" / "activation_sparsity.json").read_text())["dtype"] == (
        "bfloat16"
    )
    recorded = _recorded_pruned_ppl(run)
    assert data["ppl"] == recorded
    again = _eval(run, monkeypatch)
    assert f"{again['ppl']:.4g}" == f"{recorded:.4g}"
    assert again["ppl"] == pytest.approx(recorded, rel=1e-6)
    assert again["act_sparsity"] == pytest.approx(data["act_sparsity"], abs=1e-9)


def test_a_run_saved_without_the_dtype_uses_the_model_config(
    bf16_run: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs saved before ``activation_sparsity.json`` held the dtype: the model's config says."""
    import shutil

    run, _ = bf16_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    settings_file = old / "model" / "activation_sparsity.json"
    settings = json.loads(settings_file.read_text())
    del settings["dtype"]
    settings_file.write_text(json.dumps(settings))
    assert run_dtype(old / "model", settings) == torch.bfloat16
    again = _eval(old, monkeypatch)
    assert again["ppl"] == pytest.approx(_recorded_pruned_ppl(run), rel=1e-6)


def test_run_dtype_defaults_to_float32(tmp_path: Path) -> None:
    assert run_dtype(tmp_path, {}) == torch.float32  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert run_dtype(tmp_path, {}) == torch.float16  # older transformers' key
    assert run_dtype(tmp_path, {"dtype": "bfloat16"}) == torch.bfloat16
    assert run_dtype(tmp_path, {"dtype": "int8"}) == torch.float32  # not a model dtype
