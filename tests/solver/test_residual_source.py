"""``--residual-source``: DuoGPT's residual target is the dense model's input or the layer's own.

``dense`` (the paper, ALGORITHM.md §3) fits ``W' X^`` to ``W X~``: the dense model's output, so
the residual carries this layer's activation sparsity *and* every upstream pruning error.
``local`` fits it to ``W X_raw``, the compressed stream's input before this layer's top-k, so
only the top-k's loss is corrected. ``upstream`` fits it to ``W (X^ + X~ - X_raw)``: only the
upstream error, without the top-k's loss. ``sparse-dense`` fits it to ``W topk(X~)``: the dense
model with activation sparsity is the teacher.
"""

from __future__ import annotations

import pytest
import torch

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Finished, PerplexityMeasured
from solver.math.stats import LayerStats
from tests.solver.test_pipeline import TINY as PIPELINE_TINY

TINY = PIPELINE_TINY.replace(save_model=False, checkpoints=False)
"""The pipeline tests' tiny-random run, keeping nothing on disk."""


def pruned_ppl(config: RunConfig) -> float:
    """The pruned perplexity of one finished run."""
    events = list(stream(config))
    assert isinstance(events[-1], Finished), events[-1]
    return next(e.ppl for e in events if isinstance(e, PerplexityMeasured) and e.label == "pruned")


def pairs(config: RunConfig, monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, ...]]:
    """Every ``(X^, residual target)`` batch the statistics receive in one run."""
    seen: list[tuple[torch.Tensor, ...]] = []
    original = LayerStats.add

    def spy(
        self: LayerStats,
        x_sparse: torch.Tensor,
        x_dense: torch.Tensor | None = None,
        **kwargs: object,
    ) -> None:
        if x_dense is not None:
            seen.append((x_sparse.detach().clone(), x_dense.detach().clone()))
        original(self, x_sparse, x_dense, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LayerStats, "add", spy)
    assert isinstance(list(stream(config))[-1], Finished)
    monkeypatch.undo()
    return seen


SPARSE = TINY.replace(act_sparsity=0.5, eval_windows=0)
"""The tiny-random run at X50%, without its evaluation."""


def targets(source: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, ...]]:
    """Every ``(X^, residual target)`` batch of a :data:`SPARSE` run with one residual source."""
    seen = pairs(SPARSE.replace(residual_source=source), monkeypatch)
    assert seen
    return seen


def test_local_target_is_the_layer_input_before_its_top_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = targets("local", monkeypatch)
    for x_sparse, target in local:  # X^ is the top-k of the target: equal where it is kept
        kept = x_sparse != 0
        assert torch.equal(x_sparse[kept], target[kept])
        assert (target != 0).sum() > kept.sum()
    # the paper's target differs from it beyond the top-k once upstream layers are pruned
    dense = targets("dense", monkeypatch)
    assert len(dense) == len(local)
    assert any(not torch.equal(xs[xs != 0], xd[xs != 0]) for xs, xd in dense)


def test_local_residual_without_activation_sparsity_is_sparsegpt() -> None:
    """No top-k, no residual: DuoGPT with a local target reduces to SparseGPT (T2's analogue)."""
    base = TINY.replace(act_sparsity=0.0)
    local = pruned_ppl(base.replace(method="duogpt", residual_source="local"))
    sparsegpt = pruned_ppl(base.replace(method="sparsegpt"))
    paper = pruned_ppl(base.replace(method="duogpt"))
    assert local == pytest.approx(sparsegpt, rel=1e-5)
    assert paper != pytest.approx(sparsegpt, rel=1e-5)  # the dense target still corrects


def test_upstream_target_carries_only_the_upstream_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = targets("upstream", monkeypatch)
    dense = targets("dense", monkeypatch)
    assert len(upstream) == len(dense)
    # the first group sees no upstream pruning: nothing to correct, unlike the paper's target,
    # which also carries the top-k's loss there
    x_sparse, target = upstream[0]
    assert torch.equal(target, x_sparse)
    assert not torch.equal(dense[0][1], dense[0][0])
    # later groups do carry an upstream error, on dropped and kept inputs alike
    later = [(xs, target - xs) for xs, target in upstream[1:]]
    assert any(bool((dx[xs != 0] != 0).any()) for xs, dx in later)
    assert any(bool((dx[xs == 0] != 0).any()) for xs, dx in later)


def test_upstream_without_activation_sparsity_is_the_paper() -> None:
    """No top-k: ``X^ = X_raw``, so the upstream target is the dense model's input."""
    base = TINY.replace(act_sparsity=0.0, method="duogpt")
    upstream = pruned_ppl(base.replace(residual_source="upstream"))
    assert upstream == pytest.approx(pruned_ppl(base), rel=1e-6)


def test_sparse_dense_target_is_the_dense_input_after_its_top_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teacher = targets("sparse-dense", monkeypatch)
    for x_sparse, target in teacher:  # both halves zero: per token, the same count as X^
        assert torch.equal((target == 0).sum(-1), (x_sparse == 0).sum(-1))
    x_sparse, target = teacher[0]  # block 0: no upstream pruning, so nothing to correct
    assert torch.equal(target, x_sparse)
    assert any(not torch.equal(xs, target) for xs, target in teacher[1:])


def test_an_unknown_residual_source_is_one_line() -> None:
    from solver.errors import InputError

    with pytest.raises(InputError, match="unknown residual source 'x'"):
        TINY.replace(residual_source="x").validate()
