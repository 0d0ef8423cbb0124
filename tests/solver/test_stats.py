"""Streaming layer statistics (ALGORITHM.md §2)."""

from __future__ import annotations

import pytest
import torch

from solver.math.stats import LayerStats

F64 = torch.float64


def _inputs(seed: int = 0, tokens: int = 30, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(tokens, k, generator=gen, dtype=F64)
    sparse = dense * (torch.rand(tokens, k, generator=gen, dtype=F64) > 0.4)
    return sparse, dense


def test_batches_equal_one_shot() -> None:
    sparse, dense = _inputs()
    one = LayerStats.empty(6, dtype=F64)
    one.add(sparse, dense)
    many = LayerStats.empty(6, dtype=F64)
    for lo, hi in ((0, 7), (7, 8), (8, 20), (20, 30)):
        many.add(sparse[lo:hi].reshape(1, hi - lo, 6), dense[lo:hi].reshape(1, hi - lo, 6))
    dx = dense - sparse
    m = 30
    torch.testing.assert_close(one.H, sparse.T @ sparse / m)
    torch.testing.assert_close(one.G, dx.T @ sparse / m)
    torch.testing.assert_close(one.D, dx.T @ dx / m)
    for name in ("H", "G", "D"):
        torch.testing.assert_close(getattr(many, name), getattr(one, name))
    torch.testing.assert_close(many.g, (dx * dx).sum(dim=0) / m)
    torch.testing.assert_close(many.H_dense, dense.T @ dense / m)
    assert many.count == one.count == 30
    assert many.zeros == one.zeros == int((sparse == 0).sum())
    assert many.entries == 180
    assert many.act_sparsity == pytest.approx(float((sparse == 0).double().mean()))


def test_without_dense_input_the_mismatch_is_zero() -> None:
    sparse, dense = _inputs(1)
    stats = LayerStats.empty(6, dtype=F64)
    assert not stats.has_dense
    stats.add(sparse[:10])
    assert not stats.has_dense
    assert torch.all(stats.G == 0) and torch.all(stats.g == 0)
    stats.add(sparse[10:], dense[10:])  # the first 10 tokens count with dX = 0
    assert stats.has_dense
    dx = dense - sparse
    dx[:10] = 0
    torch.testing.assert_close(stats.H, sparse.T @ sparse / 30)
    torch.testing.assert_close(stats.G, dx.T @ sparse / 30)
    torch.testing.assert_close(stats.D, dx.T @ dx / 30)
    stats.add(sparse[:10])  # after materialising, sparse-only batches rescale G and D
    torch.testing.assert_close(stats.G, dx.T @ sparse / 40)


def test_dtype_device_and_shapes() -> None:
    stats = LayerStats.empty(4)
    assert stats.H.dtype == torch.float32 and stats.k == 4
    assert stats.act_sparsity == 0.0
    stats.add(torch.ones(2, 3, 4, dtype=torch.float16), torch.ones(2, 3, 4, dtype=torch.bfloat16))
    assert stats.H.dtype == stats.G.dtype == torch.float32
    assert stats.count == 6
    stats.add(torch.zeros(0, 4))  # nothing
    assert stats.count == 6
    with pytest.raises(ValueError):
        stats.add(torch.ones(2, 5))
    with pytest.raises(ValueError):
        stats.add(torch.ones(2, 4), torch.ones(3, 4))


def test_merged_statistics_equal_one_pass_over_all_tokens() -> None:
    gen = torch.Generator().manual_seed(3)
    x_dense = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    x_sparse = x_dense * (torch.rand(40, 6, generator=gen, dtype=torch.float64) > 0.4)
    whole = LayerStats.empty(6, dtype=torch.float64)
    whole.add(x_sparse, x_dense)
    first = LayerStats.empty(6, dtype=torch.float64)
    second = LayerStats.empty(6, dtype=torch.float64)
    first.add(x_sparse[:15], x_dense[:15])
    second.add(x_sparse[15:], x_dense[15:])
    merged = first.merged(second)
    for name in ("H", "G", "D"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name))
    assert merged.count == 40 and merged.zeros == whole.zeros
    assert torch.equal(merged.channel_nonzeros, whole.channel_nonzeros)


def test_token_clip_caps_the_weight_of_massive_tokens() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    x[0] *= 100  # one "massive activation" token
    plain = LayerStats.empty(8, dtype=torch.float64)
    clipped = LayerStats.empty(8, dtype=torch.float64)
    plain.add(x)
    clipped.add(x, token_clip=4.0)

    def share(s: LayerStats) -> float:
        return float((x[0] @ x[0]) / 64 / torch.trace(s.H))

    assert share(plain) > 0.9  # the one token carries most of H
    median = float(torch.linalg.vector_norm(x, dim=1).median())
    expected = x.clone()
    expected[0] *= 4 * median / float(torch.linalg.vector_norm(x[0]))
    torch.testing.assert_close(clipped.H, expected.T @ expected / 64)


def test_sums_add_exactly_and_merge_in_float32() -> None:
    """Statistics are sums plus counts: shards added give the statistics of all tokens."""
    gen = torch.Generator().manual_seed(5)
    x_dense = torch.randn(3, 50, 16, generator=gen)
    x_sparse = x_dense * (torch.rand(3, 50, 16, generator=gen) > 0.5)
    whole = LayerStats.empty(16)
    for b in range(3):
        whole.add(x_sparse[b], x_dense[b])
    shards = [LayerStats.empty(16) for _ in range(2)]
    for b in range(3):
        shards[b % 2].add(x_sparse[b], x_dense[b])
    total = shards[0] + shards[1]
    torch.testing.assert_close(total.H_sum, whole.H_sum, rtol=1e-5, atol=1e-5)
    for name in ("H", "G", "D", "g", "H_dense"):
        torch.testing.assert_close(getattr(total, name), getattr(whole, name), rtol=1e-5, atol=1e-6)
    assert (total.count, total.zeros, total.entries) == (whole.count, whole.zeros, whole.entries)
    assert torch.equal(total.channel_nonzeros, whole.channel_nonzeros)
    # one shard without a dense input: its mismatch counts as zero
    plain = LayerStats.empty(16)
    plain.add(x_sparse[0])
    merged = plain + shards[1]
    assert merged.has_dense and merged.count == 100
    torch.testing.assert_close(merged.G_sum, shards[1].G_sum)
    empty = LayerStats.empty(16) + LayerStats.empty(16)
    assert not empty.has_dense and empty.count == 0 and torch.all(empty.H == 0)
