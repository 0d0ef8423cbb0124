"""Measured decode speed of a model or a pruned run directory (``duogpt speed``, issue #13).

Two measurements, both batch 1, each timed after a warm-up as the median of at least 5
repeats, on the CPU in float32 (the C++ kernels of :mod:`solver.kernels.cpu`) or on CUDA in
float16 (the Triton kernels of :mod:`solver.kernels.triton_gemv`; ``backend`` says which, and
``torch-fallback`` when neither loads):

* **per layer shape**: one GEMV of a representative layer of each ``(n, k)`` shape in the
  four modes (dense torch, activation-only, weight-only, dual-sparse), with the byte bound of
  ``solver/math/speedup.py`` (the values' dtype) for every layer of that shape beside it; the
  ``all`` row weights each shape by its number of layers (the decoder's linear layers together).
* **end to end**: greedy decode of ``tokens`` tokens with the KV cache (the prefill excluded)
  for the dense model, the activation-only kernels and the dual-sparse kernels, and whether
  the sparse paths produce exactly the masked-dense model's tokens.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from solver.errors import InputError
from solver.kernels import cpu
from solver.kernels.sparse_linear import (
    SparseLinear,
    install,
    load_triton,
    triton_unavailable_reason,
)
from solver.math import speedup
from solver.math.activations import ActivationSparsifier, topk_sparsify

REPEATS = 5
"""Timed repeats per measurement (the median is reported)."""

PROMPT = "Call me Ishmael. Some years ago"
"""The prompt of the decode measurement (its prefill is not timed)."""

LAYER_MODES = ("dense", "act", "weight", "dual")

CUDA_DTYPE = torch.float16
"""The dtype of a CUDA measurement (the Triton kernels' and TEAL's)."""


def load_target(target: str) -> tuple[Any, dict[str, Any], list[str]]:
    """The loaded model, its activation settings and notes, from a run directory or a model.

    Raises:
        InputError: the target cannot be loaded.
    """
    from solver.io.models import load_model
    from solver.io.run_files import ACT_SETTINGS_FILE, MODEL_DIR
    from solver.run.evaluate import run_model_dir

    notes: list[str] = []
    settings: dict[str, Any] = {"sparsity": 0.0, "rule": "topk", "thresholds": {}}
    model_dir = run_model_dir(target)
    if model_dir is None:
        bare = Path(target).expanduser() / MODEL_DIR
        if (bare / "config.json").is_file():  # a run directory saved without the settings
            model_dir = bare
            notes.append(f"no {ACT_SETTINGS_FILE} in the run: measured weight-sparse only")
    if model_dir is not None and (model_dir / ACT_SETTINGS_FILE).is_file():
        settings = json.loads((model_dir / ACT_SETTINGS_FILE).read_text())
    loaded = load_model(str(model_dir) if model_dir is not None else target)
    model: nn.Module = loaded.model
    model.to(torch.float32)
    return loaded, settings, notes


def sparsifier_for(settings: dict[str, Any]) -> ActivationSparsifier | None:
    """The run's activation rule (None when it sparsifies nothing)."""
    sparsity = float(settings.get("sparsity", 0.0))
    if sparsity <= 0:
        return None
    return ActivationSparsifier(sparsity, settings["rule"], settings.get("thresholds") or {})


def median_us(fn: Callable[[], object]) -> float:
    """Median time of one call of ``fn`` in microseconds (warm-up, then >= 5 blocks)."""
    from torch.utils.benchmark import Timer

    fn()
    timer = Timer(stmt="fn()", globals={"fn": fn})
    number = max(1, int(2e-3 / max(timer.timeit(3).median, 1e-7)))  # ~2 ms per block
    return statistics.median(timer.timeit(number).median for _ in range(REPEATS)) * 1e6


def layer_table(
    weights: dict[str, Tensor],
    act_sparsity: float,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Per ``(n, k)`` shape: the four modes in us, x over dense, and the byte bounds.

    Args:
        weights: the (pruned) linear weights by name.
        act_sparsity: fraction of each input zeroed (top-k) in the act and dual modes.
        seed: of the random inputs.
        device: where the layers are timed (:func:`time_modes` picks the kernels from it).
        dtype: of the timed weights and inputs (float32 on the CPU).

    Returns:
        One row per shape (``shape``, ``layers``, ``<mode>_us``, ``<mode>_x``,
        ``<mode>_bound``), then an ``all`` row over every layer.
    """
    by_shape: dict[tuple[int, int], list[Tensor]] = {}
    for weight in weights.values():
        by_shape.setdefault((int(weight.shape[0]), int(weight.shape[1])), []).append(weight)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    all_costs: list[dict[str, float]] = []
    all_us = dict.fromkeys(LAYER_MODES, 0.0)
    for (n, k), group in by_shape.items():
        w = group[0].detach().to(device, dtype).contiguous()
        x_cpu = torch.randn(k, generator=gen)
        x_dense = x_cpu.to(device, dtype)
        x_sparse = topk_sparsify(x_cpu, act_sparsity).to(device, dtype).contiguous()
        timings = time_modes(w, x_dense, x_sparse)
        activity = [1.0 - float((x_sparse == 0).float().mean())] * k
        costs = speedup.total(
            speedup.decode_costs(
                speedup.column_nonzeros(g.detach().cpu()),
                n,
                activity,
                weight_bytes=float(w.element_size()),
                act_bytes=float(w.element_size()),
            )
            for g in group
        )
        all_costs.append(costs)
        for mode in LAYER_MODES:
            all_us[mode] += timings[mode] * len(group)
        rows.append(_row(f"{n}x{k}", len(group), timings, costs))
    if rows:
        rows.append(_row("all", sum(r["layers"] for r in rows), all_us, speedup.total(all_costs)))
    return rows


def time_modes(weight: Tensor, x_dense: Tensor, x_sparse: Tensor) -> dict[str, float]:
    """Median us of one GEMV of ``weight`` in each of the four modes.

    The kernels follow ``weight``'s device: the C++ ones on the CPU (float32), the Triton
    ones elsewhere; without Triton every mode is ``torch.mv``, as ``SparseLinear`` does then.
    """
    kernels = cpu if weight.device.type == "cpu" else load_triton(weight.device)
    if kernels is None:
        dense_us = median_us(lambda: torch.mv(weight, x_dense))
        return dict.fromkeys(LAYER_MODES, dense_us)
    weight_t = weight.t().contiguous()
    packed = kernels.pack_dual(weight)
    return {
        "dense": median_us(lambda: kernels.dense_gemv(weight, x_dense)),
        "act": median_us(lambda: kernels.act_gemv(weight_t, x_sparse)),
        "weight": median_us(lambda: kernels.dual_gemv(packed, x_dense)),
        "dual": median_us(lambda: kernels.dual_gemv(packed, x_sparse)),
    }


def _row(
    shape: str, layers: int, timings: dict[str, float], costs: dict[str, float]
) -> dict[str, Any]:
    bounds = speedup.speedups(costs)
    row: dict[str, Any] = {"shape": shape, "layers": layers}
    for mode in LAYER_MODES:
        row[f"{mode}_us"] = timings[mode]
        row[f"{mode}_x"] = timings["dense"] / timings[mode] if timings[mode] > 0 else math.inf
        row[f"{mode}_bound"] = bounds[mode]["bytes"]
    return row


def greedy_decode(model: nn.Module, prompt: Tensor, tokens: int) -> tuple[list[int], float]:
    """Greedy decode with the KV cache: the new tokens and the decode seconds (no prefill)."""
    import inspect

    # transformers 5 names the cache ``cache``; earlier versions ``past_key_values``.
    params = inspect.signature(model.forward).parameters
    key = "cache" if "cache" in params else "past_key_values"
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True)
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)
        generated = [int(next_id)]
        start = time.perf_counter()
        for _ in range(tokens - 1):
            out = model(input_ids=next_id, use_cache=True, **{key: out[key]})
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            generated.append(int(next_id))
        seconds = time.perf_counter() - start
    return generated, seconds


def attach_rule(
    replaced: dict[str, nn.Module], settings: dict[str, Any], *, fused: bool = True
) -> ActivationSparsifier | None:
    """Apply the run's activation rule to the ``SparseLinear`` modules of :func:`install`.

    ``topk`` (with ``fused``): each module selects its inputs itself
    (:meth:`SparseLinear.set_act_topk`, the top-k inside the C++ kernel at decode), and None is
    returned. Otherwise an attached :class:`ActivationSparsifier` (hooks, as in the masked-dense
    reference); the caller detaches it. End to end on the default DuoGPT run (1 thread,
    ``results/decode-speed-end-to-end.txt``) the fused top-k took the decode from 1.42x
    (act-only) and 1.41x (dual) to 1.57x and 1.62x the dense model's tokens/s: the hooks had
    cost ~4.3 ms of a ~26 ms token.
    """
    sparsity = float(settings.get("sparsity", 0.0))
    sparse = [module for module in replaced.values() if isinstance(module, SparseLinear)]
    topk = settings.get("rule", "topk") == "topk"
    if fused and sparsity > 0 and topk and len(sparse) == len(replaced):
        for module in sparse:
            module.set_act_topk(sparsity)
        return None
    sparsifier = sparsifier_for(settings)
    if sparsifier is not None:
        sparsifier.attach(replaced)
    return sparsifier


def decode_speed(
    model: nn.Module,
    prompt: Tensor,
    tokens: int,
    settings: dict[str, Any],
    repeats: int = REPEATS,
    *,
    fused_topk: bool = True,
) -> dict[str, Any]:
    """Tokens/s of the dense model, the act kernels and the dual kernels; token agreement.

    ``fused_topk``: the sparse modes apply a ``topk`` rule inside the kernels
    (:func:`attach_rule`); False keeps the ``ActivationSparsifier`` hooks (for comparison).
    """
    reference_sparsifier = sparsifier_for(settings)
    from solver.run.adapters import find_adapter

    with_hooks = find_adapter(model).all_linears(model) if reference_sparsifier else {}
    if reference_sparsifier is not None:
        with reference_sparsifier.attach(with_hooks):
            reference, _ = greedy_decode(model, prompt, tokens)
    else:
        reference, _ = greedy_decode(model, prompt, tokens)
    result: dict[str, Any] = {"tokens": tokens}
    same = True
    for mode in ("dense", "act", "dual"):
        runner = model if mode == "dense" else copy.deepcopy(model)
        sparsifier = None
        if mode != "dense":
            replaced = install(runner, mode)
            sparsifier = attach_rule(replaced, settings, fused=fused_topk)
        times = []
        produced: list[int] = []
        for _ in range(repeats + 1):  # the first is the warm-up
            produced, seconds = greedy_decode(runner, prompt, tokens)
            times.append(seconds)
        if sparsifier is not None:
            sparsifier.detach()
        seconds = statistics.median(times[1:])
        result[f"{mode}_tokens_per_s"] = (tokens - 1) / seconds if seconds > 0 else math.inf
        if mode != "dense":
            result[f"{mode}_same_tokens"] = produced == reference
            same = same and produced == reference
        del runner
    result["same_tokens"] = same
    dense = result["dense_tokens_per_s"]
    result["speedup_act"] = result["act_tokens_per_s"] / dense
    result["speedup_dual"] = result["dual_tokens_per_s"] / dense
    return result


def measure(
    target: str,
    *,
    tokens: int = 32,
    threads: int | None = None,
    device: str = "cpu",
    layers: bool = True,
    progress: Callable[[str], None] | None = None,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Everything ``duogpt speed`` prints (module docstring), as plain values.

    ``repeats``: timed decodes per mode after the warm-up (the median is reported); a check
    that only wants ``same_tokens`` may take 1.

    ``device``: ``cpu``, ``cuda[:N]`` (float16, the Triton kernels) or ``auto`` (CUDA when
    there is one).

    Raises:
        InputError: bad tokens, threads, device or target.
    """
    if tokens < 2:
        raise InputError(f"--tokens must be an integer >= 2, got {tokens}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be an integer >= 1, got {threads}")
    where = _speed_device(device)
    dtype = torch.float32 if where.type == "cpu" else CUDA_DTYPE
    say = progress or (lambda _text: None)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        say("building the kernels (once; cached afterwards)")
        backend, notes = backend_for(where)
        say(f"loading {target}")
        loaded, settings, load_notes = load_target(target)
        notes += load_notes
        model = loaded.model
        model.to(where, dtype)
        from solver.run.adapters import find_adapter

        weights = {
            name: module.weight
            for name, module in find_adapter(model).all_linears(model).items()
            if type(module) is nn.Linear
        }
        act_sparsity = float(settings.get("sparsity", 0.0))
        table: list[dict[str, Any]] = []
        if layers:
            say(f"timing {len(weights)} layers")
            table = layer_table(weights, act_sparsity, device=where, dtype=dtype)
        say(f"decoding {tokens} tokens x {repeats + 1} per mode")
        ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(where)
        decode = decode_speed(model, ids, tokens, settings, repeats)
        return {
            "target": target,
            "backend": backend,
            "device": str(where),
            "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "act_sparsity": act_sparsity,
            "act_rule": settings.get("rule", "topk"),
            "dense_tokens_per_s": decode["dense_tokens_per_s"],
            "act_tokens_per_s": decode["act_tokens_per_s"],
            "dual_tokens_per_s": decode["dual_tokens_per_s"],
            "speedup_act": decode["speedup_act"],
            "speedup_dual": decode["speedup_dual"],
            "same_tokens": decode["same_tokens"],
            "act_same_tokens": decode["act_same_tokens"],
            "dual_same_tokens": decode["dual_same_tokens"],
            "tokens": tokens,
            "layers": table,
            "notes": notes,
        }
    finally:
        torch.set_num_threads(before)


def _speed_device(spec: str) -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``auto`` as a device (CUDA only when it is there)."""
    from solver.io.system import cuda_available

    if spec == "cpu" or (spec == "auto" and not cuda_available()):
        return torch.device("cpu")
    if spec == "auto":
        return torch.device("cuda")
    if spec.startswith("cuda"):
        if not cuda_available():
            raise InputError(
                f"--device {spec!r}: CUDA is not available here, so the sparse kernels run "
                "on the CPU only; use --device cpu (or auto)"
            )
        try:
            return torch.device(spec)
        except RuntimeError as exc:
            raise InputError(f"--device {spec!r}: {exc}; use cuda or cuda:N") from None
    raise InputError(f"--device {spec!r}: use cpu, cuda, cuda:N or auto")


def backend_for(device: torch.device) -> tuple[str, list[str]]:
    """The kernels' name on ``device`` (``cpp``, ``triton`` or ``torch-fallback``), and a note
    saying why when it is the fallback."""
    if device.type == "cpu":
        name = cpu.backend()
        return name, [] if name == "cpp" else [f"torch fallback: {cpu.fallback_reason()}"]
    if load_triton(device) is not None:
        return "triton", []
    return "torch-fallback", [f"torch fallback: {triton_unavailable_reason(device)}"]
