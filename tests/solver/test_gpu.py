"""The CUDA path of the pipeline: same events and figures as on the CPU (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Finished, LayerSolved, PerplexityMeasured
from solver.io.system import cuda_available, resolve_device

pytestmark = pytest.mark.gpu

TINY = RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=2, batch_size=2)


def test_auto_device_follows_cuda_availability() -> None:
    expected = "cuda" if cuda_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_matches_the_cpu_run() -> None:
    results = {}
    for device in ("cpu", "cuda"):
        events = list(stream(TINY.replace(device=device)))
        assert isinstance(events[-1], Finished), events[-1]
        ppl = {e.label: e.ppl for e in events if isinstance(e, PerplexityMeasured)}
        layers = [e for e in events if isinstance(e, LayerSolved)]
        results[device] = (ppl, layers)
    cpu_ppl, cpu_layers = results["cpu"]
    gpu_ppl, gpu_layers = results["cuda"]
    for label, value in cpu_ppl.items():
        assert gpu_ppl[label] == pytest.approx(value, rel=1e-2)
    for a, b in zip(cpu_layers, gpu_layers, strict=True):
        assert b.weight_sparsity == pytest.approx(a.weight_sparsity, abs=1e-3)
    assert any(
        isinstance(e, Finished) and e.peak_memory_mb > 0
        for e in stream(TINY.replace(device="cuda"))
    )
