"""The Triton GEMV kernels against the masked dense product, and their dispatch (#13).

Without a GPU the kernels run on CPU tensors under Triton's interpreter. Interpretation is
decided when ``triton`` is first imported (its own ``tl.sum`` and friends are decorated then),
so this module sets ``TRITON_INTERPRET=1`` when it is collected, on a machine without CUDA
and before anything has imported ``triton``; nothing else in the suite runs Triton on the CPU.
Run alone or with the suite, it works the same; if ``triton`` was imported earlier, the
interpreted tests skip and say so. The kernels are also compiled ahead of time for sm_80 and
sm_90 in a fresh interpreter (no GPU needed; it catches what the interpreter forgives). On a
CUDA machine the ``gpu`` tests run them for real instead.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

import solver.kernels
from solver.errors import InputError
from solver.io.models import LoadedModel
from solver.kernels import cpu, sparse_linear, speed
from solver.kernels.sparse_linear import SparseLinear, install, load_triton, pick_backend

ROOT = Path(__file__).resolve().parents[2]
NAME = "solver.kernels.triton_gemv"

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
SHAPES = [(576, 192), (300, 37), (129, 33), (16, 1)]
"""``(n, k)``: block multiples and not (BLOCK_N 128, BLOCK_K 32, dual tiles of 256 x 16)."""

has_triton = importlib.util.find_spec("triton") is not None
has_cuda = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not has_triton, reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not has_cuda, reason="needs CUDA")

if has_triton and not has_cuda and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (docstring)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute error over the reference's max magnitude (as in test_kernels.py)."""
    y, ref = y.detach().double().cpu(), ref.detach().double().cpu()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def sparse_case(
    n: int, k: int, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ~50% sparse ``n x k`` weight and a ~50% sparse input (channel 0 active)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=gen) * (torch.rand(n, k, generator=gen) > 0.5)
    x = torch.randn(k, generator=gen) * (torch.rand(k, generator=gen) > 0.5)
    x[0] = 1.0
    return weight.to(dtype), x.to(dtype)


def masked_dense(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reference: ``W x`` in float64 from the same (rounded) values."""
    return torch.mv(weight.double(), x.double())


@pytest.fixture(scope="module")
def tg() -> ModuleType:
    """The kernels module, its kernels interpreted on CPU tensors."""
    if not has_triton:
        pytest.skip("triton is not installed")
    if has_cuda:
        pytest.skip("on a CUDA machine the gpu tests run the compiled kernels instead")
    module = importlib.import_module(NAME)
    if type(module._act_kernel).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: run this alone")
    return module


@pytest.fixture
def triton_on_cpu(tg: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``load_triton("cpu")`` probes the interpreted kernels afresh (state restored after)."""
    monkeypatch.setattr(sparse_linear, "_triton_state", {})
    return tg


@pytest.fixture
def no_triton(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if ``triton`` were not installed (its import fails; the kernels module re-imports)."""
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.delitem(sys.modules, "triton.language", raising=False)
    monkeypatch.delitem(sys.modules, NAME, raising=False)
    monkeypatch.delattr(solver.kernels, "triton_gemv", raising=False)
    monkeypatch.setattr(sparse_linear, "_triton_state", {})
    yield
    sys.modules.pop(NAME, None)  # the copy made without triton must not outlive the test


# --- parity under the interpreter -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_kernels_match_masked_dense(tg: ModuleType, n: int, k: int, dtype: torch.dtype) -> None:
    weight, x = sparse_case(n, k, seed=n + k, dtype=dtype)
    ref = masked_dense(weight, x)
    act = tg.act_gemv(weight.t().contiguous(), x)
    dual = tg.dual_gemv(tg.pack_dual(weight), x)
    assert act.dtype == dtype and act.shape == (n,) and dual.dtype == dtype
    assert rel_error(act, ref) <= TOLERANCE[dtype]
    assert rel_error(dual, ref) <= TOLERANCE[dtype]
    dense_x = torch.randn(k, generator=torch.Generator().manual_seed(k)).to(dtype)
    full = tg.dual_gemv(tg.pack_dual(weight), dense_x)  # weight-only mode
    assert rel_error(full, masked_dense(weight, dense_x)) <= TOLERANCE[dtype]


@pytest.mark.parametrize(("block_k", "block_n"), [(16, 32), (64, 256), (4, 16)])
def test_act_kernel_block_sizes(tg: ModuleType, block_k: int, block_n: int) -> None:
    weight, x = sparse_case(200, 70, seed=5)
    y = tg.act_gemv(weight.t().contiguous(), x, block_k=block_k, block_n=block_n)
    assert rel_error(y, masked_dense(weight, x)) <= 1e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_zero_input_and_weight_give_zeros(tg: ModuleType, dtype: torch.dtype) -> None:
    weight, x = sparse_case(300, 40, seed=7, dtype=dtype)
    zeros_x = torch.zeros_like(x)
    for y in (
        tg.act_gemv(weight.t().contiguous(), zeros_x),
        tg.dual_gemv(tg.pack_dual(weight), zeros_x),
    ):
        assert y.dtype == dtype and torch.equal(y, torch.zeros(300, dtype=dtype))
    empty = torch.zeros_like(weight)
    for y in (tg.act_gemv(empty.t().contiguous(), x), tg.dual_gemv(tg.pack_dual(empty), x)):
        assert torch.equal(y, torch.zeros(300, dtype=dtype))


def test_pack_dual_keeps_dtype_and_round_trips(tg: ModuleType) -> None:
    weight, _ = sparse_case(300, 20, seed=1, dtype=torch.bfloat16)
    packed = tg.pack_dual(weight)
    assert packed.values.dtype == torch.bfloat16 and packed.masks.dtype == torch.int16
    as_float = dataclasses.replace(packed, values=packed.values.float())
    assert torch.equal(cpu.unpack_dual(as_float).to(torch.bfloat16), weight)


def test_bad_arguments_are_refused(tg: ModuleType) -> None:
    weight, x = sparse_case(32, 16, seed=2)
    with pytest.raises(ValueError, match="contiguous vector of 16"):
        tg.act_gemv(weight.t().contiguous(), x[:8])
    with pytest.raises(ValueError, match="must be contiguous"):
        tg.act_gemv(weight.t(), x)
    with pytest.raises(ValueError, match="dtype"):
        tg.pack_dual(weight.to(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("mode", ["dense", "act", "weight", "dual"])
def test_sparse_linear_on_the_triton_backend(
    triton_on_cpu: ModuleType, mode: str, dtype: torch.dtype
) -> None:
    linear = nn.Linear(40, 300).to(dtype)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(300, 40) > 0.5)
    layer = SparseLinear(linear, mode, backend="triton")
    assert layer.backend == "triton" and layer.weight.dtype == dtype
    assert "backend=triton" in repr(layer)
    for shape in [(1, 1, 40), (2, 3, 40)]:  # one decode token, then a prefill
        x = torch.randn(shape).to(dtype) * (torch.rand(shape) > 0.5)
        ref = x.double() @ linear.weight.double().t() + linear.bias.double()
        y = layer(x)
        assert y.dtype == dtype and rel_error(y, ref) <= TOLERANCE[dtype]


def test_greedy_decode_through_the_triton_kernels(
    triton_on_cpu: ModuleType, fresh_tiny_model: LoadedModel
) -> None:
    """The tiny model decodes the masked-dense model's tokens through the (interpreted) kernels."""
    from solver.math.activations import ActivationSparsifier
    from solver.run.adapters import find_adapter

    model = fresh_tiny_model.model
    prompt = fresh_tiny_model.tokenizer(speed.PROMPT, return_tensors="pt")["input_ids"]
    with ActivationSparsifier(0.5, "topk", {}).attach(find_adapter(model).all_linears(model)):
        reference, _ = speed.greedy_decode(model, prompt, 6)
    replaced = install(model, "dual", backend="triton")
    assert all(isinstance(m, SparseLinear) and m.backend == "triton" for m in replaced.values())
    with ActivationSparsifier(0.5, "topk", {}).attach(replaced):
        tokens, _ = speed.greedy_decode(model, prompt, 6)
    assert tokens == reference


# --- ahead-of-time compilation (no GPU needed) --------------------------------------------

COMPILE_SCRIPT = """
import json, torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from solver.kernels import triton_gemv as tg
from solver.kernels.sparse_linear import load_triton, triton_unavailable_reason

aligned = {(i,): [["tt.divisibility", 16]] for i in range(5)}  # what the JIT infers for 4096
report = {}
for arch in (80, 90):
    for dtype in ("fp16", "bf16", "fp32"):
        act = ASTSource(
            fn=tg._act_kernel,
            signature={"wt": f"*{dtype}", "x": f"*{dtype}", "y": "*fp32", "k": "i32",
                       "n": "i32", "BLOCK_K": "constexpr", "BLOCK_N": "constexpr"},
            constexprs={"BLOCK_K": tg.BLOCK_K, "BLOCK_N": tg.BLOCK_N},
            attrs=aligned,
        )
        dual = ASTSource(
            fn=tg._dual_kernel,
            signature={"masks": "*i16", "values": f"*{dtype}", "offsets": "*i64",
                       "x": f"*{dtype}", "y": "*fp32", "k": "i32", "n": "i32", "groups": "i32",
                       "BLOCK_K": "constexpr", "WORDS": "constexpr", "GROUP": "constexpr"},
            constexprs={"BLOCK_K": tg.DUAL_BLOCK_K, "WORDS": 16, "GROUP": 16},
        )
        target = GPUTarget("cuda", arch, 32)
        act_bin, dual_bin = triton.compile(act, target=target), triton.compile(dual, target=target)
        report[f"sm{arch}-{dtype}"] = {
            "cubins": bool(act_bin.asm["cubin"]) and bool(dual_bin.asm["cubin"]),
            "vector_loads": "ld.global.v4" in act_bin.asm["ptx"],
        }
report["cpu_refused"] = load_triton("cpu") is None and bool(triton_unavailable_reason("cpu"))
print(json.dumps(report))
"""


@needs_triton
@pytest.mark.skipif(
    has_triton and tuple(int(p) for p in version("triton").split(".")[:2]) < (3, 9),
    reason="the ahead-of-time compile API used here is triton 3.9's",
)
def test_kernels_compile_for_cuda_without_a_gpu() -> None:
    """Both kernels lower to cubins for Ampere and Hopper in every dtype (ptxas is bundled);
    the activation-sparse one reads weight rows as 128-bit vectors. Compiled kernels given
    CPU tensors fail the start-up probe, so ``load_triton`` says no instead of raising."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"OMP_NUM_THREADS": "1", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report) == 7
    for key, value in report.items():
        if key != "cpu_refused":
            assert value == {"cubins": True, "vector_loads": True}, key
    assert report["cpu_refused"] is True


# --- dispatch without Triton or CUDA ------------------------------------------------------


def test_cpu_weights_take_the_cpu_kernels_without_importing_triton() -> None:
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from solver.kernels.sparse_linear import SparseLinear\n"
        "layer = SparseLinear(nn.Linear(16, 8), 'act')\n"
        "layer(torch.randn(1, 16))\n"
        "print(layer.backend, 'triton' in sys.modules)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cpu", "False"]
    assert pick_backend(torch.device("cpu")) == "cpu"


@pytest.mark.usefixtures("no_triton")
def test_without_triton_gpu_weights_fall_back_to_torch() -> None:
    assert load_triton("meta") is None
    assert "triton is not installed" in str(sparse_linear.triton_unavailable_reason("meta"))
    assert pick_backend(torch.device("meta")) == "torch"
    assert speed.backend_for(torch.device("meta"))[0] == "torch-fallback"
    note = speed.backend_for(torch.device("meta"))[1][0]
    assert note.startswith("torch fallback: triton is not installed")
    linear = nn.Linear(24, 40)
    with pytest.raises(ValueError, match="Triton kernels unusable: triton is not installed"):
        SparseLinear(linear, "act", backend="triton")
    layer = SparseLinear(linear, "dual", backend="torch")  # what a GPU weight gets then
    assert layer.weight_t is None and layer.packed is None
    x = torch.randn(1, 24)
    assert rel_error(layer(x), linear(x)) <= 1e-5


def test_kernels_env_switch_turns_triton_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUOGPT_KERNELS", "torch")
    monkeypatch.setattr(sparse_linear, "_triton_state", {})
    assert load_triton("meta") is None
    assert "DUOGPT_KERNELS=torch" in str(sparse_linear.triton_unavailable_reason("meta"))


def test_speed_devices() -> None:
    assert speed._speed_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert speed._speed_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match="CPU only"):
            speed._speed_device("cuda:0")
    with pytest.raises(InputError, match="use cpu, cuda"):
        speed._speed_device("tpu")


# --- on a GPU -----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n", "k"), [*SHAPES, (4096, 4096), (11008, 4096)])
def test_cuda_kernels_match_masked_dense(n: int, k: int, dtype: torch.dtype) -> None:
    kernels = load_triton("cuda")
    assert kernels is not None, sparse_linear.triton_unavailable_reason("cuda")
    weight, x = sparse_case(n, k, seed=n + k, dtype=dtype)
    weight, x = weight.cuda(), x.cuda()
    ref = masked_dense(weight, x)
    assert rel_error(kernels.act_gemv(weight.t().contiguous(), x), ref) <= TOLERANCE[dtype]
    assert rel_error(kernels.dual_gemv(kernels.pack_dual(weight), x), ref) <= TOLERANCE[dtype]
    zeros = torch.zeros_like(x)
    assert not kernels.act_gemv(weight.t().contiguous(), zeros).any()


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_cuda_layers_and_measure_use_triton() -> None:
    linear = nn.Linear(64, 96).cuda().half()
    layer = SparseLinear(linear, "act")
    assert layer.backend == "triton" and layer.weight.is_cuda
    x = torch.randn(1, 1, 64, device="cuda", dtype=torch.float16)
    assert rel_error(layer(x), linear(x)) <= 1e-2
    result = speed.measure("tiny-random", tokens=4, device="cuda")
    assert result["backend"] == "triton" and result["device"].startswith("cuda")
    assert result["dtype"] == "float16" and result["dense_tokens_per_s"] > 0
