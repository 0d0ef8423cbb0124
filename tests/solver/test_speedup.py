"""The decode cost model (solver/math/speedup.py) on hand-computed cases, and its place in a run."""

from __future__ import annotations

import math

import pytest
import torch

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Finished, LayerSolved
from solver.math import speedup
from solver.math.stats import LayerStats

# W (n = 4, k = 2): column 0 holds 3 nonzeros, column 1 holds 2.
W = torch.tensor([[1.0, 0.0], [2.0, 3.0], [0.0, 0.0], [4.0, 5.0]])


def test_column_nonzeros() -> None:
    assert speedup.column_nonzeros(W).tolist() == [3.0, 2.0]


def test_hand_computed_costs() -> None:
    # 2-byte values; bitmap of 4 rows = 1 byte per column; input + output = (2 + 4) * 2 = 12 B
    costs = speedup.layer_decode_costs(W, torch.tensor([0.5, 1.0]))
    assert costs == {
        "dense_flops": 16.0,  # 2 * 4 * 2
        "dense_bytes": 28.0,  # 8 weights * 2 + 12
        "weight_flops": 10.0,  # 2 * 5 nonzeros
        "weight_bytes": 24.0,  # (1 + 3 * 2) + (1 + 2 * 2) + 12
        "act_flops": 12.0,  # 2 * 4 * (0.5 + 1)
        "act_bytes": 24.0,  # 4 * 2 * 1.5 + 12
        "dual_flops": 7.0,  # 2 * (0.5 * 3 + 1 * 2)
        "dual_bytes": 20.5,  # 0.5 * 7 + 1 * 5 + 12
    }
    assert set(costs) == set(speedup.KEYS)


def test_no_activity_means_always_active_and_other_byte_sizes() -> None:
    costs = speedup.decode_costs([3, 2], 4, None, weight_bytes=4, act_bytes=0)
    assert costs["act_flops"] == costs["dense_flops"] == 16.0
    assert costs["act_bytes"] == costs["dense_bytes"] == 32.0
    assert costs["dual_bytes"] == costs["weight_bytes"] == (1 + 12) + (1 + 8)


def test_half_active_halves_the_activation_sparse_cost() -> None:
    costs = speedup.decode_costs([8] * 6, 8, [0.5] * 6, act_bytes=0)
    ratios = speedup.speedups(costs)
    assert ratios["act"] == {"flops": 2.0, "bytes": 2.0}
    assert ratios["dense"] == {"flops": 1.0, "bytes": 1.0}
    # all weights kept: the bitmap makes the weight-sparse format slower than dense
    assert ratios["weight"]["bytes"] == pytest.approx(16 / 17)


def test_total_and_ratios() -> None:
    a = speedup.decode_costs([3, 2], 4, [0.5, 1.0])
    both = speedup.total([a, a])
    assert both["dual_bytes"] == 41.0 and both["dense_flops"] == 32.0
    ratios = speedup.speedups(both)
    assert ratios["dual"]["flops"] == pytest.approx(32 / 14)
    assert ratios["weight"]["bytes"] == pytest.approx(56 / 48)
    zero = speedup.speedups({"dense_flops": 1.0, "dual_flops": 0.0})
    assert zero["dual"]["flops"] == math.inf
    assert math.isnan(speedup.speedups({})["act"]["bytes"])


@pytest.mark.parametrize(
    ("nnz", "rows", "activity"),
    [([5, 1], 4, None), ([1, 1], 4, [0.5]), ([1, 1], 4, [0.5, 1.5]), ([-1, 1], 4, None)],
)
def test_bad_input_is_refused(nnz: list[int], rows: int, activity: list[float] | None) -> None:
    with pytest.raises(ValueError):
        speedup.decode_costs(nnz, rows, activity)


def test_layer_stats_count_channel_activity() -> None:
    stats = LayerStats.empty(3)
    assert stats.channel_activity is None
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    stats.add(x)
    stats.add(x, x_active=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    assert stats.channel_nonzeros.tolist() == [3, 2, 3]
    assert stats.channel_activity is not None
    assert stats.channel_activity.tolist() == [0.75, 0.5, 0.75]


@pytest.mark.parametrize("method", ["duogpt", "sparsegpt"])
def test_run_reports_decode_costs(method: str) -> None:
    config = RunConfig(
        model="tiny-random", nsamples=4, seqlen=32, eval_windows=0, batch_size=2, method=method
    )
    events = list(stream(config))
    assert isinstance(events[-1], Finished), events[-1]
    layers = [e for e in events if isinstance(e, LayerSolved)]
    assert layers and all(set(e.decode) == set(speedup.KEYS) for e in layers)
    for layer in layers:
        n, k = layer.shape
        assert layer.decode["dense_flops"] == 2.0 * n * k
        # top-k at 50%: every token keeps half of its inputs, so half the columns are read
        assert layer.decode["act_flops"] == pytest.approx(n * k, rel=1e-6)
        assert layer.decode["weight_flops"] == pytest.approx(2 * n * k * 0.5, rel=0.02)
        assert layer.decode["dual_flops"] < layer.decode["weight_flops"]
