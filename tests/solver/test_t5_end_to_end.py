"""T5 (ALGORITHM.md §9): end to end on the real default model at W50% + X50%.

The paper's ordering is DuoGPT < SparseGPT + activation sparsity < Wanda + activation sparsity <
magnitude (+ activation sparsity). Every baseline is pruned on dense activations and evaluated
with the same activation sparsity, as in the paper.

The settings are the default command without its dense evaluations (calibration 16 x 256
tokens of SOTU, seed 0; evaluation 16 x 256 tokens of Moby-Dick spread over the held-out prose)
with the defaults of issue 9 (row masks, token clip 4, residual damping 1), on torch's default
threads. Measured over 3
calibration seeds with 1 thread (README, results/methods-x50-seeds.md): DuoGPT 213.65 ± 1.93 <
alpha 0 (SparseGPT calibrated on the sparse inputs) 227.82 ± 3.85 < SparseGPT 233.90 ± 9.84 <
Wanda 255.66 ± 4.03 < magnitude 1558.81. DuoGPT is below every other method on every seed, and
SparseGPT below Wanda on every seed, so the paper's ordering is asserted. Alpha 0 is below
SparseGPT on seeds 1 and 2 but not on seed 0 (230.36 against 226.49 with 1 thread; the thread
count moves each figure by about 2%), so at one seed it is only asserted to be no worse than
SparseGPT beyond that noise (3%); the ordering of the means is the README's. Five runs of the
real model: ``slow``.
"""

from __future__ import annotations

import pytest

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Finished, PerplexityMeasured

SETTINGS = RunConfig(
    model="smollm2-135m",
    calib="sotu",
    eval="moby-dick",
    weight_sparsity=0.5,
    act_sparsity=0.5,
    act_rule="topk",
    nsamples=16,
    seqlen=256,
    eval_windows=16,
    seed=0,
    alpha=0.125,
    block_size=128,
    save_model=False,
    checkpoints=False,
)


def pruned_perplexity(method: str) -> float:
    """The pruned perplexity of one run of ``method`` (no dense evaluations: the suite's time);
    ``alpha0`` is DuoGPT with alpha 0 (SparseGPT calibrated on the sparse inputs)."""
    config = SETTINGS.replace(method=method, eval_dense=False)
    if method == "alpha0":
        config = config.replace(method="duogpt", alpha=0.0)
    events = list(stream(config))
    assert isinstance(events[-1], Finished), events[-1]
    ppl = {e.label: e.ppl for e in events if isinstance(e, PerplexityMeasured)}
    assert events[-1].weight_sparsity == pytest.approx(0.5, abs=1e-3)
    assert events[-1].act_sparsity == pytest.approx(0.5, abs=1e-2)
    assert set(ppl) == {"pruned"}, ppl
    return ppl["pruned"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_t5_perplexity_ordering_on_the_default_model() -> None:
    methods = ("duogpt", "alpha0", "sparsegpt", "wanda", "magnitude")
    ppl = {m: pruned_perplexity(m) for m in methods}
    assert all(50 < value < 5000 for value in ppl.values()), ppl  # dense + X50% is 113
    assert ppl["duogpt"] < ppl["sparsegpt"] < ppl["wanda"] < ppl["magnitude"], ppl
    assert ppl["duogpt"] < ppl["alpha0"], ppl  # issue 9: the residual helps
    assert ppl["alpha0"] < 1.03 * ppl["sparsegpt"], ppl  # sparse calibration: no worse
