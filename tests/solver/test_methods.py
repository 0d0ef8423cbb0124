"""The method registry: one declaration per method, and every list of names follows it."""

from __future__ import annotations

import pytest
import torch

from solver import config as config_mod
from solver.config import RunConfig
from solver.errors import InputError
from solver.math.masks import apply_mask, magnitude_mask
from solver.math.obc import prune_obc
from solver.math.stats import LayerStats
from solver.run import methods
from tests.test_import_hygiene import loaded_after_import


def stats_of(k: int = 16, tokens: int = 64) -> LayerStats:
    """Seeded statistics of a ``k``-input layer with a dense/sparse mismatch."""
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(tokens, k, generator=generator)
    sparse = dense * (torch.rand(tokens, k, generator=generator) > 0.3)
    stats = LayerStats.empty(k)
    stats.add(sparse, dense)
    return stats


def test_the_configs_choices_are_the_registrys_names() -> None:
    # ``solver.config`` imports the names without re-exporting them: read its namespace.
    assert config_mod.METHODS == methods.NAMES == tuple(methods.REGISTRY)
    assert all(methods.get(name).name == name for name in methods.NAMES)
    assert RunConfig().method in methods.REGISTRY


def test_the_registry_imports_no_torch() -> None:
    """``solver.config`` and ``duogpt --help`` take the names from it: it must stay light."""
    assert "torch" not in loaded_after_import(["solver.run.methods"])


def test_an_unknown_method_is_one_line() -> None:
    with pytest.raises(InputError, match=r"unknown method 'obs': choose one of duogpt, "):
        methods.get("obs")


def test_what_each_method_reads() -> None:
    reads = {name: method.reads for name, method in methods.REGISTRY.items()}
    assert reads["duogpt"] == methods.Statistics(hessian=True, mismatch=True)
    assert reads["sparsegpt"] == methods.Statistics(hessian=True)
    assert reads["wanda"] == methods.Statistics(norms=True)
    assert reads["magnitude"] == reads["dense"] == methods.Statistics()
    assert [name for name, m in methods.REGISTRY.items() if not m.prunes] == ["dense"]


def test_the_solves_match_the_math() -> None:
    config = RunConfig(block_size=8, alpha=0.25)
    weight = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    stats = stats_of()

    def solve(name: str, **changes: object) -> methods.Solution:
        run_config = config.replace(method=name, **changes)
        return methods.get(name).solve(weight, stats, run_config, None)

    dense = solve("dense")
    assert dense.weight is weight and dense.alpha == 0.0
    assert torch.equal(solve("magnitude").weight, apply_mask(weight, magnitude_mask(weight, 0.5)))
    wanda = solve("wanda").weight
    assert all(int((row == 0).sum()) == 8 for row in wanda)
    options = {
        "damping": config.damping,
        "block_size": 8,
        "damping_rule": config.damping_rule,
        "mask_scope": config.mask_scope,
        "residual_damping": config.residual_damping,
    }
    sparsegpt = solve("sparsegpt")
    assert torch.equal(sparsegpt.weight, prune_obc(weight, stats.H, **options).weight)  # type: ignore[arg-type]
    duogpt = solve("duogpt")
    expected = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=0.25, **options)  # type: ignore[arg-type]
    assert torch.equal(duogpt.weight, expected.weight) and duogpt.alpha == 0.25
    assert not torch.equal(duogpt.weight, sparsegpt.weight)


def test_duogpt_chooses_alpha_on_held_out_statistics() -> None:
    weight = torch.randn(12, 16, generator=torch.Generator().manual_seed(2))
    config = RunConfig(block_size=8, alpha=0.25, alpha_select="heldout")
    solution = methods.get("duogpt").solve(
        weight, stats_of(), config, (stats_of(), stats_of(tokens=32))
    )
    assert set(solution.heldout) == {0.0, 0.125, 0.25}
    assert solution.alpha == min(solution.heldout, key=lambda a: (solution.heldout[a], a))
