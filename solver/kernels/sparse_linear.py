"""``SparseLinear``: a decoder linear layer that runs batch-1 decode through the GEMV kernels.

:func:`install` swaps every ``nn.Linear`` that the model adapter finds for a ``SparseLinear``
in one of four modes (``dense``, ``act``, ``weight``, ``dual``; ``solver/math/speedup.py``
names them). A single-token input (decode with the KV cache) goes through the kernel of the
mode; several tokens (the prefill) go through ``F.linear`` on the same weight, so only decode
is sped up. The activation rule is applied in one of two ways: the solver's
:class:`~solver.math.activations.ActivationSparsifier`, attached to the returned modules by
name (it zeroes the inputs, and the kernels skip the zeros; any rule), or, for the ``topk``
rule, :meth:`SparseLinear.set_act_topk`, which selects a decoded token's inputs inside the
C++ kernel (``solver/kernels/speed.py``'s :func:`~solver.kernels.speed.attach_rule` picks it;
the hooks cost more than the kernels saved, see :meth:`SparseLinear.forward`).

The kernels follow the weight's device (:data:`BACKENDS`): on the CPU the compiled float32
kernels of :mod:`solver.kernels.cpu`; on CUDA the Triton kernels of
:mod:`solver.kernels.triton_gemv` in the model's dtype, when ``triton`` imports and a probe
of both kernels runs (:func:`load_triton`); otherwise ``F.linear`` on the device. Nothing
here calls CUDA unless the weight is already on it, and ``triton`` is imported only then.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solver.kernels import cpu
from solver.math.activations import topk_sparsify

MODES = ("dense", "act", "weight", "dual")
"""``dense``: torch; ``act``: channel-major columns of the active inputs; ``weight``: the
non-zero weights of every channel; ``dual``: the non-zero weights of the active channels."""

BACKENDS = ("cpu", "triton", "torch")
"""``cpu``: :mod:`solver.kernels.cpu` in float32 on the CPU; ``triton``: the Triton kernels on
the weight's device and dtype; ``torch``: ``F.linear`` on the weight's device (no kernel)."""

_triton_lock = threading.Lock()
_triton_state: dict[str, str | None] = {}  # device -> None (usable) or why not


def load_triton(device: torch.device | str) -> ModuleType | None:
    """:mod:`solver.kernels.triton_gemv` when its kernels run on ``device``, else None.

    The first call per device imports ``triton`` and runs both kernels on a small float16
    layer against ``torch.mv``; an import error, a failed compile or a wrong result makes
    every later call return None, and :func:`triton_unavailable_reason` says why.
    ``DUOGPT_KERNELS=torch`` turns the Triton path off as it does the CPU one.
    """
    key = str(torch.device(device))
    with _triton_lock:
        if key not in _triton_state:
            _triton_state[key] = _probe_triton(torch.device(device))
        reason = _triton_state[key]
    if reason is not None:
        return None
    return importlib.import_module("solver.kernels.triton_gemv")


def triton_unavailable_reason(device: torch.device | str) -> str | None:
    """Why the Triton kernels are not used on ``device`` (None when they are)."""
    load_triton(device)
    return _triton_state.get(str(torch.device(device)))


def _probe_triton(device: torch.device) -> str | None:
    if os.environ.get("DUOGPT_KERNELS") == "torch":
        return "DUOGPT_KERNELS=torch asks for the torch reference path"
    try:
        kernels = importlib.import_module("solver.kernels.triton_gemv")
        if kernels.UNAVAILABLE is not None:
            return str(kernels.UNAVAILABLE)
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(40, 24, generator=gen) * (torch.rand(40, 24, generator=gen) > 0.5)
        x = torch.randn(24, generator=gen) * (torch.rand(24, generator=gen) > 0.5)
        weight, x = weight.to(device, torch.float16), x.to(device, torch.float16)
        ref = torch.mv(weight.float(), x.float())
        act = kernels.act_gemv(weight.t().contiguous(), x)
        dual = kernels.dual_gemv(kernels.pack_dual(weight), x)
        for y in (act, dual):
            if not torch.allclose(y.float(), ref, rtol=1e-2, atol=1e-2):
                return "the Triton kernels gave a wrong result in the start-up probe"
    except Exception as exc:  # no triton, no driver, a failed compile: fall back, say why
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    return None


def pick_backend(device: torch.device) -> str:
    """The backend for a weight on ``device``: ``cpu``, else ``triton`` when it loads, else
    ``torch``."""
    if device.type == "cpu":
        return "cpu"
    return "triton" if load_triton(device) is not None else "torch"


class SparseLinear(nn.Module):
    """A linear layer whose single-token forward runs one of the GEMV kernels.

    On the ``cpu`` backend the weight is float32 on the CPU; on the others it keeps the
    layer's device and dtype.

    Args:
        linear: the layer to replace (its weight is copied, already pruned).
        mode: one of :data:`MODES`.
        backend: one of :data:`BACKENDS`; by default :func:`pick_backend` of the weight's
            device. ``triton`` on a CPU weight needs Triton's interpreter (the tests use it).

    Raises:
        ValueError: an unknown mode or backend, or ``triton`` asked for where it cannot run.
    """

    def __init__(self, linear: nn.Linear, mode: str, backend: str | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        device = linear.weight.device
        backend = backend or pick_backend(device)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
        kernels: ModuleType = cpu
        if backend == "triton":
            loaded = load_triton(device)
            if loaded is None:
                raise ValueError(f"Triton kernels unusable: {triton_unavailable_reason(device)}")
            kernels = loaded
        self.mode = mode
        self.backend = backend
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        dtype = torch.float32 if backend == "cpu" else linear.weight.dtype
        where = torch.device("cpu") if backend == "cpu" else device
        weight = linear.weight.detach().to(where, dtype).contiguous()  # (n, k)
        self.weight = nn.Parameter(weight, requires_grad=False)
        bias = linear.bias
        self.bias = (
            None
            if bias is None
            else nn.Parameter(bias.detach().to(where, dtype), requires_grad=False)
        )
        use_kernels = backend != "torch"
        self.weight_t = weight.t().contiguous() if mode == "act" and use_kernels else None
        sparse_weight = mode in ("weight", "dual") and use_kernels
        self.packed = kernels.pack_dual(weight) if sparse_weight else None
        self._act_gemv: Callable[[Tensor, Tensor], Tensor] = kernels.act_gemv
        self._dual_gemv: Callable[[cpu.DualWeight, Tensor], Tensor] = kernels.dual_gemv
        self.act_topk = 0.0
        self._fused: Callable[[Tensor], Tensor | None] | None = None

    def set_act_topk(self, sparsity: float) -> None:
        """Zero the ``floor(k * sparsity)`` smallest-magnitude inputs of every token before the
        product (the ``topk`` rule of :func:`~solver.math.activations.topk_sparsify`: the same
        zeroed inputs as ``ActivationSparsifier`` hooks give); 0 turns it off."""
        self.act_topk = float(sparsity)
        drop = cpu.topk_drop(self.in_features, self.act_topk) if sparsity > 0 else 0
        self._fused = None
        if drop and self.backend == "cpu" and self.mode in ("act", "dual"):
            storage = self.weight_t if self.weight_t is not None else self.packed
            assert storage is not None
            self._fused = cpu.topk_gemv(storage, drop)

    def forward(self, x: Tensor) -> Tensor:
        """``x W^T + b``; a single token goes through the mode's kernel.

        With :meth:`set_act_topk`, a single float32 token on the ``cpu`` backend in the ``act``
        or ``dual`` mode takes the fused path (:func:`~solver.kernels.cpu.topk_gemv`): the C++
        kernel selects the kept inputs itself, exactly the set ``torch.topk`` keeps, and
        declines (returns None) where a tie at the cut would make that set depend on the
        tie-break. Where it declines, and for several tokens (the prefill), the input goes
        through :func:`~solver.math.activations.topk_sparsify` as in the masked-dense model.

        Why, measured on the default DuoGPT run of SmolLM2-135M (1 thread, benchmark processes
        paused, ``results/decode-speed-end-to-end.txt``): the ``ActivationSparsifier`` hooks
        cost ~20 us per layer and token (hook dispatch, ``topk``, ``scatter``,
        ``count_nonzero``), ~4.3 ms of a 27 ms token, where the selection in C++
        (``nth_element`` on the magnitudes' bits) costs 1-2 us; binding the storage once and
        shaping the result in C++ saves another ~3 us of Python per call. Act-only decode went
        from 1.33x to 1.64x the dense model's tokens/s, dual from 1.35x to 1.59x (same
        session); no decoded token of that run hit a tie.
        """
        dtype = self.weight.dtype
        single = x.numel() == self.in_features
        fused = self._fused
        if fused is not None and single and x.dtype == dtype and x.is_contiguous():
            y = fused(x)  # x's shape with out_features
            if y is not None:
                return y if self.bias is None else y + self.bias
        if self.act_topk > 0:
            x = topk_sparsify(x, self.act_topk)
        if self.mode == "dense" or self.backend == "torch" or not single:
            return F.linear(x.to(dtype), self.weight, self.bias).to(x.dtype)
        v = x.reshape(-1).to(dtype).contiguous()
        if self.weight_t is not None:
            y = self._act_gemv(self.weight_t, v)
        elif self.packed is not None:
            y = self._dual_gemv(self.packed, v)
        else:  # pragma: no cover - every mode has its storage
            y = torch.mv(self.weight, v)
        return self._output(y, x)

    def _output(self, y: Tensor, x: Tensor) -> Tensor:
        """The kernel's ``(n,)`` result plus the bias, shaped and typed like ``x``'s token."""
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        """The shape and mode, for ``print(model)``."""
        return (
            f"in={self.in_features}, out={self.out_features}, mode={self.mode}, "
            f"backend={self.backend}"
        )


def install(model: nn.Module, mode: str, backend: str | None = None) -> dict[str, nn.Module]:
    """Replace the model's prunable ``nn.Linear`` layers by ``SparseLinear`` in ``mode``.

    Layers of other types (``Conv1D``, fused experts) stay as they are; ``backend`` as in
    :class:`SparseLinear` (by default from each weight's device).

    Returns:
        The new modules by full name (the names activation thresholds are keyed by).
    """
    from solver.run.adapters import find_adapter

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    replaced: dict[str, nn.Module] = {}
    for name, module in find_adapter(model).all_linears(model).items():
        if type(module) is not nn.Linear:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        sparse = SparseLinear(module, mode, backend)
        setattr(parent, attr, sparse)
        replaced[name] = sparse
    return replaced
