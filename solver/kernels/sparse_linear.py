"""``SparseLinear``: a decoder linear layer that runs batch-1 decode through the CPU kernels.

:func:`install` swaps every ``nn.Linear`` that the model adapter finds for a ``SparseLinear``
in one of four modes (``dense``, ``act``, ``weight``, ``dual``; ``solver/math/speedup.py``
names them). A single-token input (decode with the KV cache) goes through the kernel of the
mode; several tokens (the prefill) go through ``F.linear`` on the same float32 weight, so
only decode is sped up. The activation rule itself (top-k or thresholds) stays where the
solver keeps it, :class:`~solver.math.activations.ActivationSparsifier`, attached to the
returned modules by name: it zeroes the inputs, and the kernels skip the zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solver.kernels import cpu

MODES = ("dense", "act", "weight", "dual")
"""``dense``: torch; ``act``: channel-major columns of the active inputs; ``weight``: the
non-zero weights of every channel; ``dual``: the non-zero weights of the active channels."""


class SparseLinear(nn.Module):
    """A float32 linear layer whose single-token forward runs one of the GEMV kernels.

    Args:
        linear: the layer to replace (its weight is copied, already pruned).
        mode: one of :data:`MODES`.
    """

    def __init__(self, linear: nn.Linear, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode = mode
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().to("cpu", torch.float32).contiguous()  # (n, k)
        self.weight = nn.Parameter(weight, requires_grad=False)
        bias = linear.bias
        self.bias = (
            None
            if bias is None
            else nn.Parameter(bias.detach().to("cpu", torch.float32), requires_grad=False)
        )
        self.weight_t = weight.t().contiguous() if mode == "act" else None  # (k, n)
        self.packed = cpu.pack_dual(weight) if mode in ("weight", "dual") else None

    def forward(self, x: Tensor) -> Tensor:
        """``x W^T + b``; a single token goes through the mode's kernel."""
        if self.mode == "dense" or x.numel() != self.in_features:
            return F.linear(x.to(torch.float32), self.weight, self.bias).to(x.dtype)
        v = x.reshape(-1).to(torch.float32).contiguous()
        if self.weight_t is not None:
            y = cpu.act_gemv(self.weight_t, v)
        elif self.packed is not None:
            y = cpu.dual_gemv(self.packed, v)
        else:  # pragma: no cover - every mode has its storage
            y = cpu.dense_gemv(self.weight, v)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        """The shape and mode, for ``print(model)``."""
        return f"in={self.in_features}, out={self.out_features}, mode={self.mode}"


def install(model: nn.Module, mode: str) -> dict[str, nn.Module]:
    """Replace the model's prunable ``nn.Linear`` layers by ``SparseLinear`` in ``mode``.

    Layers of other types (``Conv1D``, fused experts) stay as they are.

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
        sparse = SparseLinear(module, mode)
        setattr(parent, attr, sparse)
        replaced[name] = sparse
    return replaced
