"""Activation thresholds calibrated on the stream that evaluation feeds them (threshold rule)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Event, Finished, Note, PerplexityMeasured, Progress
from solver.io.models import load_model
from solver.math.activations import ActivationSparsifier, calibrate_threshold
from solver.run import thresholds
from solver.run.adapters import find_adapter
from solver.run.capture import capture_inputs
from solver.run.context import RunContext
from tests.solver.families import save_tiny, write_texts
from tests.solver.test_pipeline import TINY

RECALIBRATED = "activation thresholds calibrated on the pruned model"


def _measured(
    model: torch.nn.Module, names: dict[str, float], batches: torch.Tensor
) -> dict[str, float]:
    """Each layer's activation sparsity when the model runs ``batches`` with these thresholds."""
    adapter = find_adapter(model)
    sparsifier = ActivationSparsifier(0.5, "threshold", names)
    with torch.no_grad(), sparsifier.attach(adapter.all_linears(model)):
        model(batches)
    return sparsifier.measured()


def test_recalibrated_thresholds_hit_the_target_with_upstream_sparsity_on() -> None:
    loaded = load_model("tiny-random")
    model = loaded.model
    adapter = find_adapter(model)
    calib = torch.randint(0, int(model.config.vocab_size), (4, 32), generator=torch.Generator())
    run = RunContext(RunConfig(method="sparsegpt", act_rule="threshold", act_sparsity=0.5))
    assert thresholds.needs_recalibration(run)
    events = list(thresholds.recalibrate(run, model, adapter, list(torch.split(calib, 2))))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.done for p in progress] == [0, 1, 2] and progress[0].phase == "calibrate"
    assert isinstance(events[-1], Note) and RECALIBRATED in events[-1].text
    assert len(run.thresholds) == 14 and all(t > 0 for t in run.thresholds.values())
    # on the calibration tokens, with every threshold on, each layer zeroes the target
    measured = _measured(model, run.thresholds, calib)
    assert measured.keys() == run.thresholds.keys()
    assert max(abs(x - 0.5) for x in measured.values()) < 2e-3
    # thresholds fitted to the dense-activation stream miss it: the test can tell them apart
    store: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), capture_inputs(adapter.all_linears(model), store):
        model(calib)
    naive = {name: calibrate_threshold(torch.cat(xs), 0.5) for name, xs in store.items()}
    missed = _measured(model, naive, calib)
    assert max(abs(x - 0.5) for x in missed.values()) > 0.01


def test_a_method_on_dense_activations_gets_thresholds_from_the_sparse_stream() -> None:
    events = list(stream(TINY.replace(method="sparsegpt", act_rule="threshold")))
    assert isinstance(events[-1], Finished)
    notes = [e.text for e in events if isinstance(e, Note)]
    assert sum(RECALIBRATED in text for text in notes) == 1
    line = next(text for text in notes if RECALIBRATED in text)
    assert "14 layers" in line and "median" in line
    pruned = next(e for e in events if isinstance(e, PerplexityMeasured) and e.label == "pruned")
    assert 0.3 < pruned.act_sparsity < 0.7


@pytest.mark.parametrize("true_sequential", [True, False], ids=["sequential", "all-at-once"])
def test_a_residual_method_calibrates_on_its_sparse_stream(true_sequential: bool) -> None:
    """DuoGPT calibrates on the activation-sparse stream while pruning. All at once it
    calibrates the block's thresholds before its statistics pass (it failed with "no activation
    threshold" before), then walks the pruned model again like the dense-activation methods."""
    config = TINY.replace(act_rule="threshold", true_sequential=true_sequential)
    events: list[Event] = list(stream(config))
    assert isinstance(events[-1], Finished), events[-1]
    notes = [e.text for e in events if isinstance(e, Note)]
    # all at once, the later groups' thresholds saw the block's layers unpruned: walked again
    assert sum(RECALIBRATED in text for text in notes) == (0 if true_sequential else 1)


def test_needs_recalibration_by_rule_method_and_order() -> None:
    def needs(**changes: object) -> bool:
        return thresholds.needs_recalibration(RunContext(RunConfig(**changes)))  # type: ignore[arg-type]

    assert not needs(act_rule="topk", method="sparsegpt")
    assert not needs(act_rule="threshold", act_sparsity=0.0, method="sparsegpt")
    assert not needs(act_rule="threshold", method="duogpt")
    assert needs(act_rule="threshold", method="duogpt", true_sequential=False)
    for method in ("sparsegpt", "wanda", "magnitude", "dense"):
        assert needs(act_rule="threshold", method=method), method


def test_experts_keep_their_thresholds_and_the_run_finishes(tmp_path: Path) -> None:
    folder = save_tiny("mixtral", tmp_path / "model")
    texts = write_texts(folder.parent)
    config = TINY.replace(
        model=str(folder),
        calib=str(texts["calib"]),
        eval=str(texts["eval"]),
        method="sparsegpt",
        act_rule="threshold",
        eval_dense=False,
    )
    events = list(stream(config))
    assert isinstance(events[-1], Finished), events[-1]
    assert any(RECALIBRATED in e.text for e in events if isinstance(e, Note))
