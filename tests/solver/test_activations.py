"""Activation sparsity: ALGORITHM.md §1 and §9 T4."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solver.errors import RunError
from solver.math.activations import (
    ActivationSparsifier,
    calibrate_threshold,
    threshold_sparsify,
    topk_sparsify,
)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("d", "sparsity"), [(16, 0.5), (10, 0.25), (7, 0.5), (64, 0.9)])
def test_topk_zeroes_exactly_floor_d_p_smallest(d: int, sparsity: float) -> None:
    x = _x(3, 5, d)
    out = topk_sparsify(x, sparsity)
    drop = int(d * sparsity)
    zeros = (out == 0).sum(dim=-1)
    assert torch.all(zeros == drop)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])  # kept entries unchanged
    mags = x.abs().reshape(-1, d)
    kept = kept.reshape(-1, d)
    for row, keep in zip(mags, kept, strict=True):
        if drop:
            assert row[~keep].max() <= row[keep].min()


def test_topk_count_is_exact_with_ties() -> None:
    x = torch.ones(4, 10)
    x[1] = -2.0
    x[2, :6] = 3.0  # six equal large values, four equal small ones
    out = topk_sparsify(x, 0.5)
    assert torch.all((out == 0).sum(dim=-1) == 5)
    assert int((out[2, 6:] == 0).sum()) == 4  # the four small ones, plus one tied large one


def test_topk_zero_sparsity_is_identity() -> None:
    x = _x(2, 8)
    assert topk_sparsify(x, 0.0) is x
    assert topk_sparsify(x, 0.1) is x  # floor(8 * 0.1) = 0


def test_threshold_sparsify_and_calibration() -> None:
    x = _x(64, 200, seed=1) * torch.linspace(0.1, 3, 200)
    for sparsity in (0.1, 0.5, 0.75):
        t = calibrate_threshold(x, sparsity)
        out = threshold_sparsify(x, t)
        assert float((out == 0).double().mean()) == pytest.approx(sparsity, abs=0.01)
        assert int((x.abs() < t).sum()) == int(x.numel() * sparsity)  # exact without ties
        assert torch.equal(out != 0, x.abs() >= t)
    assert calibrate_threshold(x, 0.0) == 0.0
    assert torch.equal(threshold_sparsify(x, 0.0), x)


def test_calibrate_threshold_beyond_quantile_limit() -> None:
    n = (1 << 24) + 1001  # torch.quantile refuses more than 16M elements
    x = torch.rand(n, generator=torch.Generator().manual_seed(2)) * 2 - 1
    t = calibrate_threshold(x, 0.5)
    assert t == pytest.approx(0.5, abs=0.01)
    assert float((x.abs() < t).double().mean()) == pytest.approx(0.5, abs=0.001)


def test_sparsifier_changes_a_linear_output_and_detaches() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    x = _x(3, 5, 16)
    dense = lin(x)
    sparsifier = ActivationSparsifier(0.5).attach({"lin": lin})
    out = lin(x)
    torch.testing.assert_close(out, F.linear(topk_sparsify(x, 0.5), lin.weight, lin.bias))
    assert not torch.allclose(out, dense)
    assert sparsifier.measured() == {"lin": pytest.approx(0.5)}
    assert sparsifier.mean_measured() == pytest.approx(0.5)

    sparsifier.enabled = False
    torch.testing.assert_close(lin(x), dense)
    sparsifier.enabled = True
    assert sparsifier.measured()["lin"] == pytest.approx(0.5)  # the disabled call was not counted

    sparsifier.detach()
    sparsifier.detach()  # idempotent
    torch.testing.assert_close(lin(x), dense)
    assert len(lin._forward_pre_hooks) == 0
    assert sparsifier.measured()["lin"] == pytest.approx(0.5)  # still readable
    sparsifier.reset()
    assert sparsifier.measured() == {"lin": 0.0}
    assert sparsifier.mean_measured() == 0.0


def test_sparsifier_context_manager_shared_input_and_weighting() -> None:
    torch.manual_seed(1)
    q, k, down = nn.Linear(12, 4), nn.Linear(12, 6), nn.Linear(20, 3)
    x, h = _x(2, 3, 12, seed=3), _x(2, 3, 20, seed=4)
    with ActivationSparsifier(0.25).attach({"q": q, "k": k}) as sp:
        sp.attach({"down": down})
        out_q, out_k = q(x), k(x)  # one input shared by two layers
        torch.testing.assert_close(out_q, F.linear(topk_sparsify(x, 0.25), q.weight, q.bias))
        torch.testing.assert_close(out_k, F.linear(topk_sparsify(x, 0.25), k.weight, k.bias))
        x.mul_(-2)  # an in-place change must not reuse the cached sparsified input
        torch.testing.assert_close(q(x), F.linear(topk_sparsify(x, 0.25), q.weight, q.bias))
        h_zero = h.clone()
        h_zero[..., :4] = 0  # already zero: 4 of 20 are zero, top-k adds 1 more per token
        down(h_zero)
        measured = sp.measured()
    assert len(q._forward_pre_hooks) == len(down._forward_pre_hooks) == 0
    assert measured["q"] == pytest.approx(3 / 12)
    assert measured["k"] == pytest.approx(3 / 12)
    assert measured["down"] == pytest.approx(5 / 20)
    entries = {"q": 2 * 72, "k": 72, "down": 120}
    expect = sum(measured[n] * e for n, e in entries.items()) / sum(entries.values())
    assert sp.mean_measured() == pytest.approx(expect)


def test_sparsifier_zero_sparsity_counts_existing_zeros() -> None:
    lin = nn.Linear(10, 2)
    with ActivationSparsifier(0.0).attach({"lin": lin}) as sp, torch.inference_mode():
        x = _x(4, 10)  # an inference tensor: no version counter
        x[:, :3] = 0
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
        lin(x)
        assert sp.measured()["lin"] == pytest.approx(0.3)
        sp.sparsity = 0.5
        y = _x(4, 10, seed=9)
        torch.testing.assert_close(lin(y), F.linear(topk_sparsify(y, 0.5), lin.weight, lin.bias))


def test_sparsifier_threshold_rule() -> None:
    lin = nn.Linear(10, 2)
    x = _x(50, 10, seed=5)
    t = calibrate_threshold(x, 0.5)
    with ActivationSparsifier(0.5, rule="threshold", thresholds={"lin": t}).attach(
        {"lin": lin}
    ) as sp:
        torch.testing.assert_close(lin(x), F.linear(threshold_sparsify(x, t), lin.weight, lin.bias))
        assert sp.measured()["lin"] == pytest.approx(0.5, abs=0.01)
    with (
        ActivationSparsifier(0.5, rule="threshold").attach({"mlp.down_proj": lin}),
        pytest.raises(RunError, match=r"mlp\.down_proj"),
    ):
        lin(x)
    with pytest.raises(ValueError):
        ActivationSparsifier(0.5, rule="nope")
