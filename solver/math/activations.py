"""Activation sparsity: the dynamic half of dual sparsity (ALGORITHM.md §1, §9 T4).

For every token the input vector of each decoder linear layer keeps only its largest-magnitude
entries. Two rules:

* ``topk`` (the paper's main rule): per token, zero exactly ``floor(d * p_x)`` smallest ``|x|``;
* ``threshold`` (TEAL style): zero ``|x| < t`` with a per-layer threshold ``t`` calibrated once so
  that the average sparsity hits ``p_x``.

:class:`ActivationSparsifier` applies a rule to the inputs of ``nn.Linear`` modules through
forward pre-hooks, so the residual stream itself is never touched, only the copy fed into a layer.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from solver.errors import RunError
from solver.math.masks import prune_count

RULES = ("topk", "threshold")


def topk_sparsify(x: Tensor, sparsity: float) -> Tensor:
    """Zero the ``floor(d * sparsity)`` smallest-magnitude entries of every token (§1).

    Args:
        x: ``(..., d)`` activations; the last dimension is the feature dimension.
        sparsity: fraction of each token's entries to zero.

    Returns:
        A new tensor (``x`` itself when nothing is zeroed). Ties are broken by ``topk``, so the
        count per token is exact.
    """
    d = x.shape[-1]
    drop = prune_count(d, sparsity)
    if drop == 0 or x.numel() == 0:
        return x
    idx = torch.topk(x.abs(), drop, dim=-1, largest=False, sorted=False).indices  # (..., drop)
    return x.scatter(-1, idx, 0)


def threshold_sparsify(x: Tensor, threshold: float) -> Tensor:
    """Zero the entries with ``|x| < threshold`` (TEAL style, §1)."""
    if threshold <= 0:
        return x
    return x.masked_fill(x.abs() < threshold, 0)


def calibrate_threshold(x: Tensor, sparsity: float) -> float:
    """A magnitude threshold ``t`` such that the fraction of ``|x| < t`` is about ``sparsity``.

    Uses ``kthvalue`` on the flattened magnitudes (no ``torch.quantile`` size limit): ``t`` sits
    halfway between the ``c``-th and ``(c+1)``-th smallest magnitudes, ``c = floor(N * sparsity)``,
    so the fraction is exact unless those two are tied.
    """
    flat = x.detach().reshape(-1).abs().float()
    n = flat.numel()
    c = prune_count(n, sparsity)
    if c == 0:
        return 0.0
    low = float(torch.kthvalue(flat, c).values)
    if c >= n:
        return float(torch.nextafter(torch.tensor(low), torch.tensor(float("inf"))))
    high = float(torch.kthvalue(flat, c + 1).values)
    return (low + high) / 2 if high > low else high


class ActivationSparsifier:
    """Forward pre-hooks on nn.Linear modules that sparsify their inputs; counts zeros it produced.

    Usage::

        with ActivationSparsifier(0.5).attach({"q_proj": q, "k_proj": k}) as sparsifier:
            model(batch)
            sparsifier.measured()   # {"q_proj": 0.5, "k_proj": 0.5}

    Attributes:
        sparsity: fraction of each token's input entries to zero (``topk``); 0 = pass-through.
        rule: ``topk`` or ``threshold``.
        thresholds: per module name, the magnitude threshold for the ``threshold`` rule.
        enabled: when False, inputs pass through untouched and are not counted.
    """

    def __init__(
        self, sparsity: float, rule: str = "topk", thresholds: dict[str, float] | None = None
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown activation rule {rule!r}: use topk or threshold")
        self.sparsity = float(sparsity)
        self.rule = rule
        self.thresholds: dict[str, float] = dict(thresholds or {})
        self.enabled = True
        self._handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._zeros: dict[str, Tensor | int] = {}  # per name, on the activations' device
        self._entries: dict[str, int] = {}
        # One-entry cache: q/k/v (and gate/up) receive the same input tensor, so it is sparsified
        # once. Keyed by the input (a weak reference, so the cache dies with it), its version and
        # the rule's parameter.
        self._cache: tuple[weakref.ref[Tensor], int, float, Tensor, Tensor] | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def attach(self, modules: Mapping[str, nn.Module]) -> ActivationSparsifier:
        """Hook every module (name -> module); counters for these names restart. Returns self."""
        for name, module in modules.items():
            if name in self._handles:
                self._handles.pop(name).remove()
            self._handles[name] = module.register_forward_pre_hook(self._make_hook(name))
            self._zeros[name] = 0
            self._entries[name] = 0
        return self

    def detach(self) -> None:
        """Remove all hooks (idempotent); the counters stay readable until :meth:`reset`."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._cache = None

    def __enter__(self) -> ActivationSparsifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not self.enabled or not args or not isinstance(args[0], Tensor):
                return None
            x_sparse, nonzero = self._sparsify(name, args[0])
            zeros = self._zeros[name]
            if isinstance(zeros, Tensor) and zeros.device != nonzero.device:
                zeros = zeros.to(nonzero.device)
            self._zeros[name] = zeros + (x_sparse.numel() - nonzero)  # no host sync here
            self._entries[name] += x_sparse.numel()
            return (x_sparse, *args[1:])

        return hook

    def _sparsify(self, name: str, x: Tensor) -> tuple[Tensor, Tensor]:
        """The sparsified input and its non-zero count (a 0-dim tensor on ``x``'s device)."""
        if self.sparsity <= 0:
            param = 0.0
        elif self.rule == "topk":
            param = self.sparsity
        else:
            if name not in self.thresholds:
                raise RunError(
                    f"no activation threshold for layer {name!r}: calibrate the thresholds "
                    "first or use the topk activation rule"
                )
            param = float(self.thresholds[name])
        version = _version(x)
        cache = self._cache
        if cache is not None and cache[0]() is x and cache[1] == version and cache[2] == param:
            return cache[3], cache[4]
        if param == 0.0:
            out = x
        elif self.rule == "topk":
            out = topk_sparsify(x, param)
        else:
            out = threshold_sparsify(x, param)
        nonzero = torch.count_nonzero(out)
        self._cache = (weakref.ref(x, self._drop_cache), version, param, out, nonzero)
        return out, nonzero

    def _drop_cache(self, _ref: object) -> None:
        self._cache = None

    # -- counters ------------------------------------------------------------------------------

    def measured(self) -> dict[str, float]:
        """Per attached name: fraction of zero input entries seen since attach/reset."""
        return {
            name: (_as_int(self._zeros[name]) / entries if entries else 0.0)
            for name, entries in self._entries.items()
        }

    def mean_measured(self) -> float:
        """Entry-weighted mean of :meth:`measured` over all names (0.0 if nothing was seen)."""
        entries = sum(self._entries.values())
        if not entries:
            return 0.0
        return sum(_as_int(z) for z in self._zeros.values()) / entries

    def reset(self) -> None:
        """Restart all counters."""
        for name in self._entries:
            self._zeros[name] = 0
            self._entries[name] = 0
        self._cache = None


def _version(x: Tensor) -> int:
    """The tensor's in-place version counter; -1 for inference tensors, which have none (they
    cannot be modified in place outside inference mode)."""
    return -1 if x.is_inference() else x._version


def _as_int(value: Tensor | int) -> int:
    return int(value.item()) if isinstance(value, Tensor) else int(value)
