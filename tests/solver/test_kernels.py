"""The CPU GEMV kernels against the masked dense product, and ``SparseLinear`` decode (#13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from solver.kernels import cpu, speed
from solver.kernels.sparse_linear import SparseLinear, install
from solver.math.activations import topk_sparsify

SHAPES = [(1536, 576), (576, 1536), (192, 576), (530, 33), (100, 37), (16, 1)]
"""The SmolLM2 shapes, then partial tiles and partial 16-row groups (530 = 2 x 256 + 18)."""


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach(), ref.detach()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def sparse_case(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) > 0.5)
    x = torch.randn(k, generator=gen) * (torch.rand(k, generator=gen) > 0.5)
    x[0] = 1.0  # at least one active channel
    return weight, x


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_kernels_match_masked_dense(n: int, k: int, threads: int) -> None:
    weight, x = sparse_case(n, k, seed=n + k)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = cpu.dense_gemv(weight.double(), x.double()).float()
        dense_x = torch.randn(k)
        full = cpu.dense_gemv(weight.double(), dense_x.double()).float()
        assert rel_error(cpu.act_gemv(weight.t().contiguous(), x), ref) <= 1e-5
        outputs = []
        for kernel in cpu.KERNELS:  # auto, then each kernel forced
            packed = cpu.pack_dual(weight, kernel=kernel)
            if kernel != "auto":
                assert packed.kernel == kernel
            y = cpu.dual_gemv(packed, x)
            assert rel_error(y, ref) <= 1e-5, kernel
            y_full = cpu.dual_gemv(packed, dense_x)
            assert rel_error(y_full, full) <= 1e-5, kernel  # weight-only mode
            outputs.append((y, y_full))
        # the two kernels add the same products in the same order: the choice is invisible
        for y, y_full in outputs[1:]:
            assert torch.equal(y, outputs[0][0]) and torch.equal(y_full, outputs[0][1])
    finally:
        torch.set_num_threads(before)


def test_kernels_with_no_active_input() -> None:
    weight, _ = sparse_case(300, 40, seed=5)
    zeros = torch.zeros(40)
    assert not cpu.act_gemv(weight.t().contiguous(), zeros).any()
    for kernel in ("bitmap", "act"):
        assert not cpu.dual_gemv(cpu.pack_dual(weight, kernel=kernel), zeros).any()


def test_pack_dual_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    weight, _ = sparse_case(200, 24, seed=2)
    act = cpu.pack_dual(weight, kernel="act")
    assert act.dense_t is not None and torch.equal(act.dense_t, weight.t())
    assert cpu.pack_dual(weight, kernel="bitmap").dense_t is None
    assert cpu.pack_dual(weight).kernel in ("bitmap", "act")  # auto: timed once per shape
    monkeypatch.setenv("DUOGPT_DUAL_KERNEL", "bitmap")
    assert cpu.pack_dual(weight).kernel == "bitmap"
    monkeypatch.setenv("DUOGPT_DUAL_KERNEL", "act")
    assert cpu.pack_dual(weight).kernel == "act"
    with pytest.raises(ValueError, match="unknown dual kernel"):
        cpu.pack_dual(weight, kernel="fast")


def test_portable_loops_match_without_avx512() -> None:
    """The same source built with ``-mno-avx512f`` (the scalar loops of CPUs without
    AVX-512) gives the masked dense result too (one more ~30 s build, cached afterwards)."""
    module, reason = cpu._build([*cpu._CFLAGS, "-mno-avx512f"])
    assert module is not None, reason
    assert not module.has_avx512()
    weight, x = sparse_case(530, 33, seed=7)
    packed = cpu.pack_dual(weight, kernel="bitmap")
    ref = cpu.dense_gemv(weight.double(), x.double()).float()
    assert rel_error(module.act_gemv(weight.t().contiguous(), x), ref) <= 1e-5
    y = module.dual_gemv(packed.masks, packed.values, packed.offsets, x, packed.rows)
    assert rel_error(y, ref) <= 1e-5
    dense_x = torch.randn(33)
    sparse_x = topk_sparsify(dense_x, 0.5)
    expected = module.act_gemv(weight.t().contiguous(), sparse_x)
    assert torch.equal(module.act_gemv_topk(weight.t().contiguous(), dense_x, 16), expected)
    y = module.dual_gemv_topk(packed.masks, packed.values, packed.offsets, dense_x, 530, 16)
    assert rel_error(y, cpu.dense_gemv(weight.double(), sparse_x.double()).float()) <= 1e-5


def topk_inputs(k: int, seed: int) -> list[torch.Tensor]:
    """Top-k test vectors of length ``k``: continuous, with zeros (both signs), and small
    integers (ties everywhere, also at the cut), plus a constant one."""
    gen = torch.Generator().manual_seed(seed)
    continuous = torch.randn(k, generator=gen)
    zeros = continuous * (torch.rand(k, generator=gen) > 0.6)
    zeros[: k // 4] = -0.0
    ties = torch.randint(-3, 4, (k,), generator=gen).float()
    few = torch.where(torch.rand(k, generator=gen) < 0.5, 2.0, -2.0) * (torch.arange(k) % 3 > 0)
    return [continuous, zeros, ties, few, torch.full((k,), 0.5), torch.zeros(k)]


def cut_is_tied(x: torch.Tensor, drop: int) -> bool:
    """Whether the ``drop``-th and ``(drop + 1)``-th smallest ``|x|`` are equal and non-zero
    (then the kept set depends on how ``torch.topk`` breaks the tie)."""
    if drop <= 0 or drop >= x.numel():
        return False
    magnitudes = x.abs().sort().values
    return bool(magnitudes[drop - 1] == magnitudes[drop]) and bool(magnitudes[drop] != 0)


@pytest.mark.parametrize("k", [576, 1536, 33, 1])
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_fused_topk_selects_the_reference_top_k(k: int, sparsity: float) -> None:
    """The C++ selection keeps exactly the entries that ``topk_sparsify`` (``torch.topk``)
    keeps, or declines where a tie at the cut makes that set depend on the tie-break; the
    fused kernels then equal the reference kernels on the sparsified input, bit for bit."""
    n = 40
    gen = torch.Generator().manual_seed(k)
    weight = torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) > 0.5)
    weight_t = weight.t().contiguous()
    packs = [cpu.pack_dual(weight, kernel=kernel) for kernel in ("act", "bitmap")]
    drop = cpu.topk_drop(k, sparsity)
    declined = 0
    for x in topk_inputs(k, seed=k + int(100 * sparsity)):
        reference = topk_sparsify(x, sparsity)
        kept = cpu.topk_channels(x, drop)
        if kept is None:
            assert cut_is_tied(x, drop)
            declined += 1
            for y in [cpu.act_gemv_topk(weight_t, x, drop)]:
                assert y is None
            assert all(cpu.dual_gemv_topk(p, x, drop) is None for p in packs)
            continue
        assert torch.equal(kept, torch.nonzero(reference).reshape(-1))
        assert kept.numel() <= k - drop
        expected = cpu.act_gemv(weight_t, reference)
        fused = cpu.act_gemv_topk(weight_t, x, drop)
        assert fused is not None and torch.equal(fused, expected)
        for packed in packs:
            fused = cpu.dual_gemv_topk(packed, x, drop)
            assert fused is not None and torch.equal(fused, cpu.dual_gemv(packed, reference))
    if 0 < drop < k and k > 1:
        assert declined >= 1  # the tied inputs reached the decline path


def test_fused_topk_declines_nan() -> None:
    x = torch.randn(64)
    x[7] = float("nan")
    assert cpu.topk_channels(x, 32) is None
    assert cpu.act_gemv_topk(torch.randn(64, 8), x, 32) is None


@pytest.mark.parametrize("mode", ["act", "dual", "dense", "weight"])
def test_sparse_linear_topk_matches_masked_linear(mode: str) -> None:
    """``SparseLinear.set_act_topk`` gives the masked-dense layer's output for one token
    (fused, or the reference path on a tie) and for several (the prefill)."""
    linear = nn.Linear(64, 24)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(24, 64) > 0.5)
    layer = SparseLinear(linear, mode)
    layer.set_act_topk(0.5)
    inputs = [x.reshape(1, 1, 64) for x in topk_inputs(64, seed=3)]
    for x in [*inputs, torch.randn(2, 3, 64)]:
        expected = linear(topk_sparsify(x, 0.5))
        assert layer(x).shape == expected.shape
        assert rel_error(layer(x), expected) <= 1e-5
    layer.set_act_topk(0.0)
    x = torch.randn(1, 1, 64)
    assert rel_error(layer(x), linear(x)) <= 1e-5


def test_kernels_are_compiled() -> None:
    assert cpu.backend() == "cpp", cpu.fallback_reason()
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq"} <= set(flags):
        ext = cpu._extension()
        assert ext is not None and ext.has_avx512()  # -march=native reached the vector paths


def test_pack_dual_round_trips_and_counts_bytes() -> None:
    weight, _ = sparse_case(300, 20, seed=1)
    packed = cpu.pack_dual(weight)
    assert torch.equal(cpu.unpack_dual(packed), weight)
    nnz = int((weight != 0).sum())
    assert packed.nbytes() == 20 * 19 * 2 + nnz * 4  # 19 words of 16 rows per column


def test_torch_fallback_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    weight, x = sparse_case(64, 48, seed=3)
    monkeypatch.setitem(cpu._state, "module", None)
    monkeypatch.setitem(cpu._state, "reason", "test")
    assert cpu.backend() == "torch-fallback"
    ref = weight @ x
    assert rel_error(cpu.act_gemv(weight.t().contiguous(), x), ref) <= 1e-5
    packed = cpu.pack_dual(weight)
    assert packed.kernel == "bitmap"  # nothing to choose between without the build
    assert rel_error(cpu.dual_gemv(packed, x), ref) <= 1e-5


@pytest.mark.parametrize("mode", ["dense", "act", "weight", "dual"])
def test_sparse_linear_matches_linear(mode: str) -> None:
    linear = nn.Linear(40, 24)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(24, 40) > 0.5)
    layer = SparseLinear(linear, mode)
    for shape in [(1, 1, 40), (2, 3, 40)]:
        x = torch.randn(shape)
        assert rel_error(layer(x), linear(x)) <= 1e-5


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-random run pruned at W50% + X50% (seconds)."""
    from duogpt_tui.cli import app

    run = tmp_path_factory.mktemp("speed") / "run"
    args = ["prune", "--model", "tiny-random", "--nsamples", "4", "--seqlen", "32"]
    args += ["--eval-windows", "2", "--act-sparsity", "0.5", "--out", str(run), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run


def test_sparse_generation_gives_the_masked_dense_tokens(pruned_run: Path) -> None:
    loaded, settings, notes = speed.load_target(str(pruned_run))
    assert float(settings["sparsity"]) == pytest.approx(0.5) and not notes
    prompt = loaded.tokenizer(speed.PROMPT, return_tensors="pt")["input_ids"]
    sparsifier = speed.sparsifier_for(settings)
    assert sparsifier is not None
    from solver.run.adapters import find_adapter

    model = loaded.model
    with sparsifier.attach(find_adapter(model).all_linears(model)):
        reference, _ = speed.greedy_decode(model, prompt, 24)
    for mode in ("act", "dual"):
        model = speed.load_target(str(pruned_run))[0].model
        replaced = install(model, mode)
        assert replaced and all(isinstance(m, SparseLinear) for m in replaced.values())
        with speed.sparsifier_for(settings).attach(replaced):  # type: ignore[union-attr]
            tokens, _ = speed.greedy_decode(model, prompt, 24)
        assert tokens == reference, mode
        # the top-k inside the kernels (what ``duogpt speed`` times) gives the same tokens
        assert speed.attach_rule(replaced, settings) is None
        assert all(m.act_topk == 0.5 for m in replaced.values())
        tokens, _ = speed.greedy_decode(model, prompt, 24)
        assert tokens == reference, f"{mode}, fused top-k"


def test_measure_reports_every_figure(pruned_run: Path) -> None:
    result = speed.measure(str(pruned_run), tokens=4, threads=1)
    for key in ("dense_tokens_per_s", "act_tokens_per_s", "dual_tokens_per_s", "speedup_act"):
        assert result[key] > 0
    assert result["same_tokens"] is True and result["backend"] == "cpp"
    assert result["threads"] == 1 and result["layers"][-1]["shape"] == "all"
    assert {"dense_us", "dual_x", "dual_bound"} <= set(result["layers"][0])
