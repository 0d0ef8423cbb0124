"""A rough pre-flight estimate of a run's memory and time, and what one block needs.

Back-of-the-envelope formulas, not measurements (the run's events carry the measured figures).
For a LLaMA-style model with ``P`` parameters (``P_l`` of them in prunable layers), hidden size
``h``, MLP size ``i``, ``L`` blocks, ``T_c = nsamples x seqlen`` calibration tokens,
``T_b = batch_size x seqlen`` tokens per forward pass and ``T_e = eval_windows x seqlen``
evaluation tokens (4 bytes per float32 value):

* **one block** (:func:`block_memory`): the two calibration streams ``2 T_c h``; the cached dense
  inputs of the block's layer groups ``T_c (3h + i)``; the compressed inputs of one group
  ``T_c max(h, i)``; the solver's float32 matrices for the widest layer (``H``, ``G``, their
  damped copy and ``U``, weight copies) ``6 k^2 + 4 i h`` with ``k = max(h, i)``; one forward
  pass's activations ``T_b (4h + 3i)``.
* **the run** (:func:`estimate`): :data:`BASE_MEMORY_MB` (Python, torch, transformers) + the
  model's weights in its dtype + one block + the logits of one evaluation batch and one row's
  float32 loss terms ``(T_b + 2 S) V`` (``S`` = seqlen, ``V`` = vocabulary). That is the
  device-side peak of ``--offload none`` (a bound: the whole model is on the device only while
  evaluating, the streams only while pruning).
* **offload** (:func:`offload_modes`, ``--offload cpu``, :mod:`solver.run.offload`): with ``b``
  bytes per value of the model's dtype, ``P_b = 2h^2 + 2 h h_kv + 3 h i`` parameters per block
  (``h_kv`` the key/value width) and ``P_o = P - L P_b`` outside the blocks, the device holds
  at most, while pruning, one block's weights ``b P_b`` + the batches moved to it
  ``b T_b max(h, 2k)`` (one stream's hidden states, or one group's compressed and dense inputs)
  + a workspace: the solver's matrices, one forward pass's activations, one batch's recorded
  layer inputs ``b T_b (3h + i)`` and its output ``b T_b h``; while evaluating, the weights
  outside the blocks and one block ``b (P_o + P_b)`` + the logits and one forward pass. The
  host holds the weights ``b P``, the streams ``2 b T_c h``, the cached inputs
  ``b T_c (3h + i)`` and one group's compressed inputs ``b T_c k``. Each block's weights cross
  the bus twice while pruning and twice per evaluation batch; the streams ``2 b T_c h`` per
  pass (:data:`BUS_BYTES_PER_S`). ``--offload disk`` has ``cpu``'s device figures; its host
  holds, once the model is loaded, the weights outside the blocks and one block
  ``b (P_o + P_b)`` instead of ``b P`` (the blocks are memory-mapped files, paged in as they
  are read and dropped by the kernel when memory is short), and the same streams. Loading
  reads the whole model into host memory once, whatever the mode: ``b P`` while loading.
* **time**: ``6 P_l T_c`` (dense and compressed forward passes) + per layer ``4 k^2 T_c``
  (statistics) and ``2 n k^2 + 1.5 k^3`` (the OBC sweep and Cholesky) + ``2 P T_e`` per
  perplexity evaluation, divided by :data:`THROUGHPUT_FLOPS`, plus :data:`LAYER_OVERHEAD_S` per
  layer and :data:`STARTUP_S`.

Sizes come from the caller, else from :func:`solver.io.inputs.model_facts` (built-in models, a
folder's ``config.json``, a GGUF header, the hub cache): nothing is loaded or downloaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from solver.config import RunConfig

BASE_MEMORY_MB = 400.0
"""Resident memory before the model is loaded (measured: tiny-random peaks at ~410 MB)."""

THROUGHPUT_FLOPS = {"cpu": 2.0e10, "cuda": 2.0e12}
"""Assumed sustained float32 throughput: 20 GFLOP/s on a small CPU, 2 TFLOP/s on a GPU."""

LAYER_OVERHEAD_S = {"cpu": 0.1, "cuda": 0.02}
"""Fixed seconds per pruned layer (Python, small kernels, captures) that FLOPs do not show."""

STARTUP_S = 5.0
"""Seconds to import the libraries and read the texts."""

BUS_BYTES_PER_S = 1.0e10
"""Assumed host-device copy rate with ``--offload cpu`` on CUDA (PCIe 4 x16, pinned memory)."""

PASSES_PER_BLOCK = 6
"""Forward passes of a block per stream batch while pruning (dense, four groups, compressed)."""

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Estimate:
    """A rough estimate of a run's cost.

    Attributes:
        memory_mb: peak memory (host memory on CPU, accelerator memory on CUDA) with the
            offload mode the run uses.
        seconds: wall time; 0 when the model's size is unknown.
        detail: what the figures are made of, in one line.
        offload: the offload mode the run uses (``auto`` resolved; ``""`` when the model's size
            is unknown and ``auto`` cannot choose).
        reason: why ``auto`` chose it (empty otherwise).
        modes: the memory of each offload mode (empty when the model's size is unknown).
    """

    memory_mb: float
    seconds: float
    detail: str
    offload: str = "none"
    reason: str = ""
    modes: tuple[OffloadMemory, ...] = ()

    def mode(self, name: str) -> OffloadMemory:
        """The memory of one offload mode.

        Raises:
            KeyError: the estimate has none for it.
        """
        for memory in self.modes:
            if memory.mode == name:
                return memory
        raise KeyError(name)


@dataclass(frozen=True)
class DevicePeak:
    """What the device holds at one phase's peak, in MB (see the module text).

    Attributes:
        weights: parameters on the device.
        inputs: batches moved to (or living on) the device: streams, cached layer inputs.
        work: what the computation makes there: forward activations, logits, solver matrices.
    """

    weights: float
    inputs: float
    work: float

    @property
    def total(self) -> float:
        """All of it."""
        return self.weights + self.inputs + self.work


@dataclass(frozen=True)
class OffloadMemory:
    """The memory of a run with one offload mode, in MB (see the module text).

    Attributes:
        mode: ``none``, ``cpu`` or ``disk``.
        pruning: the device's peak while pruning a block.
        evaluation: the device's peak while evaluating.
        host: what the host holds besides :data:`BASE_MEMORY_MB` while the device works
            (the weights, streams and cached inputs that wait there with ``cpu``; with
            ``disk`` the same without the blocks' weights but one block; nothing counted with
            ``none``, whose figures count everything on the device).
        loading: what the host holds besides :data:`BASE_MEMORY_MB` while the model loads
            (its weights, in every mode).
    """

    mode: str
    pruning: DevicePeak
    evaluation: DevicePeak
    host: float = 0.0
    loading: float = 0.0

    @property
    def device(self) -> float:
        """The device-side peak: :data:`BASE_MEMORY_MB` and the larger phase."""
        return BASE_MEMORY_MB + max(self.pruning.total, self.evaluation.total)

    def on(self, kind: str) -> float:
        """The peak a run on a ``kind`` device needs there (on the CPU, the device's weights are
        the host's: nothing moves, and the host's share is the same memory; the load of the
        whole model counts too, which only ``disk`` can stay below afterwards)."""
        if kind != "cpu" or not self.host:
            return self.device
        phases = (self.pruning, self.evaluation)
        working = self.host + max(p.total - p.weights for p in phases)
        return BASE_MEMORY_MB + max(working, self.loading)


@dataclass(frozen=True)
class BlockMemory:
    """What pruning one block needs on top of the model's weights, in MB (see the module text).

    Attributes:
        streams: the dense and compressed calibration streams.
        cached_inputs: the block's cached dense layer inputs and one group's compressed inputs.
        solver: statistics and solver matrices for the widest layer.
        forward: one forward pass's activations.
    """

    streams: float
    cached_inputs: float
    solver: float
    forward: float

    @property
    def total(self) -> float:
        """All of it."""
        return self.streams + self.cached_inputs + self.solver + self.forward

    def describe(self) -> str:
        """``about 1.2 GB (calibration streams 0.3 GB, ...)``."""
        return (
            f"about {megabytes(self.total)} (calibration streams {megabytes(self.streams)}, "
            f"cached layer inputs {megabytes(self.cached_inputs)}, solver "
            f"{megabytes(self.solver)}, forward pass {megabytes(self.forward)})"
        )


def block_memory(
    nsamples: int, seqlen: int, batch_size: int, hidden: int, intermediate: int
) -> BlockMemory:
    """Memory for pruning one block (see the module text)."""
    tokens, batch = nsamples * seqlen, min(batch_size, nsamples) * seqlen
    h, i = hidden, intermediate
    k = max(h, i)
    mb = 4 / 2**20
    return BlockMemory(
        streams=2 * tokens * h * mb,
        cached_inputs=tokens * (3 * h + i + k) * mb,
        solver=(6 * k * k + 4 * i * h) * mb,
        forward=batch * (4 * h + 3 * i) * mb,
    )


def estimate(
    config: RunConfig,
    n_params: int | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    intermediate: int | None = None,
    *,
    device: str = "cpu",
    vocab: int | None = None,
    kv_dim: int | None = None,
    available_mb: float | None = None,
) -> Estimate:
    """Estimate the memory and time of ``config`` (see the module text).

    Args:
        config: the run.
        n_params: all parameters of the model; default: from the model spec.
        hidden: hidden size; default: from the model spec.
        layers: decoder blocks; default: from the model spec.
        intermediate: MLP size; default: from the model spec (else ``4 x hidden``).
        device: ``cpu`` or ``cuda[:N]``: the throughput assumed.
        vocab: vocabulary size; default: from the model spec when it is read, else 32000.
        kv_dim: key/value projection width; default: from the model spec when it is read,
            else ``hidden``.
        available_mb: the device's free memory, for ``--offload auto`` (None: unknown).

    Returns:
        The estimate; when the model's size is unknown, only the calibration part is counted and
        ``detail`` says so.
    """
    from solver.io.inputs import model_facts

    kind = "cuda" if device.startswith("cuda") else "cpu"
    facts = None
    if None in (n_params, hidden, layers, intermediate):
        facts = model_facts(config.model)
        n_params = n_params or facts.params
        hidden = hidden or facts.hidden
        layers = layers or facts.layers
        intermediate = intermediate or facts.intermediate
        vocab = vocab or facts.vocab
        kv_dim = kv_dim or facts.kv_dim
    vocab = vocab or 32000
    calib = f"calibration {config.nsamples} x {config.seqlen} tokens"
    if hidden is None or layers is None:
        return Estimate(
            BASE_MEMORY_MB,
            0.0,
            f"model size unknown until it is loaded; {calib}",
            offload="" if config.offload == "auto" else config.offload,
        )
    intermediate = intermediate or 4 * hidden
    n_params = n_params or layers * (4 * hidden * hidden + 3 * hidden * intermediate)
    modes = offload_modes(config, n_params, hidden, layers, intermediate, vocab, kv_dim)
    mode, reason = choose_offload(config.offload, kind, modes[0].on(kind), available_mb)
    memory = next((m for m in modes if m.mode == mode), modes[0]).on(kind)
    weights_mb = n_params * DTYPE_BYTES.get(config.dtype, 4) / 2**20
    block = block_memory(config.nsamples, config.seqlen, config.batch_size, hidden, intermediate)
    seconds = _seconds(config, n_params, hidden, layers, intermediate, kind)
    if mode in ("cpu", "disk") and kind == "cuda":
        seconds += _bus_seconds(config, n_params, hidden, layers)
    detail = (
        f"{n_params / 1e6:.1f}M params in {config.dtype} {megabytes(weights_mb)}, {calib}, "
        f"one block {megabytes(block.total)}; {THROUGHPUT_FLOPS[kind] / 1e9:g} GFLOP/s assumed "
        f"on {kind}"
    )
    return Estimate(round(memory, 1), round(seconds, 1), detail, mode, reason, modes)


def offload_modes(
    config: RunConfig,
    n_params: int,
    hidden: int,
    layers: int,
    intermediate: int,
    vocab: int = 32000,
    kv_dim: int | None = None,
) -> tuple[OffloadMemory, OffloadMemory, OffloadMemory]:
    """The memory of ``config`` with ``--offload none``, ``cpu`` and ``disk`` (see the module
    text).

    Args:
        config: the run (calibration and evaluation sizes, batch size, dtype).
        n_params: all parameters of the model.
        hidden: hidden size ``h``.
        layers: decoder blocks ``L``.
        intermediate: MLP size ``i``.
        vocab: vocabulary size ``V``.
        kv_dim: key/value projection width (default ``h``).

    Returns:
        ``(none, cpu, disk)``.
    """
    h, i, kv = hidden, intermediate, kv_dim or hidden
    k = max(h, i)
    mb = 1 / 2**20
    b = DTYPE_BYTES.get(config.dtype, 4)
    block = block_memory(config.nsamples, config.seqlen, config.batch_size, h, i)
    weights = n_params * b * mb
    eval_batch = min(config.batch_size, max(config.eval_windows, 1)) * config.eval_len
    logits = (eval_batch + 2 * config.eval_len) * vocab * 4 * mb if config.eval_windows else 0.0
    everything = DevicePeak(weights, block.streams + block.cached_inputs, block.solver + logits)
    none = OffloadMemory(
        "none",
        pruning=dataclasses.replace(everything, work=everything.work + block.forward),
        evaluation=everything,
        loading=weights,
    )
    block_params = 2 * h * h + 2 * kv * h + 3 * h * i
    outside = max(n_params - layers * block_params, vocab * h)
    tokens = config.nsamples * config.seqlen
    batch = min(config.batch_size, config.nsamples) * config.seqlen
    eval_forward = eval_batch * (4 * h + 3 * i) * 4 * mb if config.eval_windows else 0.0
    cpu = OffloadMemory(
        "cpu",
        pruning=DevicePeak(
            weights=block_params * b * mb,
            inputs=batch * max(h, 2 * k) * b * mb,
            work=block.solver + block.forward + batch * (4 * h + i) * b * mb,
        ),
        evaluation=DevicePeak(
            weights=(outside + block_params) * b * mb, inputs=0.0, work=logits + eval_forward
        ),
        host=weights + tokens * (2 * h + 3 * h + i + k) * b * mb,
        loading=weights,
    )
    mapped = weights - min(weights, (outside + block_params) * b * mb)  # all blocks but one
    disk = dataclasses.replace(cpu, mode="disk", host=cpu.host - mapped)
    return none, cpu, disk


def choose_offload(
    mode: str, kind: str, need_mb: float, available_mb: float | None
) -> tuple[str, str]:
    """The offload mode a run uses, and why when ``auto`` chose it.

    Args:
        mode: the ``--offload`` value.
        kind: the run device's type, ``cpu`` or ``cuda``.
        need_mb: the estimated peak on the device with ``none``.
        available_mb: the device's free memory (None: unknown).

    Returns:
        ``(mode, reason)``: ``mode`` itself unless it is ``auto``, and ``""`` then; for ``auto``
        ``none`` or ``cpu`` and why. ``auto`` never picks ``disk``: the device's free memory
        decides ``auto``, and ``disk`` leaves the device's figures as ``cpu`` has them; it
        spends time reading the blocks from disk to save host memory, which is the user's call.
    """
    if mode != "auto":
        return mode, ""
    if kind != "cuda":
        return "none", "the device is the CPU, whose memory holds the model anyway"
    if available_mb is None:
        return "none", "the device's free memory is unknown"
    fits = need_mb <= available_mb
    reason = (
        f"without offload the run needs about {megabytes(need_mb)} of {kind} memory, which "
        f"{'fits in' if fits else 'exceeds'} the {megabytes(available_mb)} free"
    )
    return ("none" if fits else "cpu"), reason


def _seconds(
    config: RunConfig, n_params: int, hidden: int, layers: int, intermediate: int, kind: str
) -> float:
    """Wall time from the FLOP count (see the module text)."""
    h, i = hidden, intermediate
    shapes = [(h, h)] * 4 + [(i, h), (i, h), (h, i)]  # q k v o gate up down (k, v as wide as h)
    prunable = layers * sum(n * k for n, k in shapes)
    calib_tokens = config.nsamples * config.seqlen
    flops = 6.0 * prunable * calib_tokens
    if config.method in ("duogpt", "sparsegpt"):
        flops += layers * sum(
            4.0 * k * k * calib_tokens + 2.0 * n * k * k + 1.5 * k**3 for n, k in shapes
        )
    elif config.method == "wanda":
        flops += layers * sum(2.0 * k * calib_tokens for _, k in shapes)
    evaluations = 2 + (1 if config.act_sparsity > 0 else 0)
    eval_tokens = config.eval_windows * config.eval_len
    flops += 2.0 * n_params * eval_tokens * evaluations
    if config.proxy_every:
        proxies = max(layers - 1, 0) // config.proxy_every
        flops += 2.0 * n_params * config.proxy_windows * config.seqlen * proxies
    overhead = layers * len(shapes) * LAYER_OVERHEAD_S[kind]
    return STARTUP_S + overhead + flops / THROUGHPUT_FLOPS[kind]


def _bus_seconds(config: RunConfig, n_params: int, hidden: int, layers: int) -> float:
    """Host-device copies of ``--offload cpu`` (see the module text)."""
    b = DTYPE_BYTES.get(config.dtype, 4)
    weights = n_params * b
    streams = 2 * config.nsamples * config.seqlen * hidden * b
    moved = 2 * weights + layers * PASSES_PER_BLOCK * streams
    evaluations = 2 + (1 if config.act_sparsity > 0 else 0)
    batches = -(-config.eval_windows // config.batch_size)
    moved += 2 * weights * batches * evaluations
    return moved / BUS_BYTES_PER_S


def megabytes(value: float) -> str:
    """``0.4 MB``, ``812 MB`` or ``1.2 GB``."""
    if value >= 1024:
        return f"{value / 1024:.1f} GB"
    return f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"


THIN_CALIBRATION_FACTOR = 2
"""Calibration tokens below this many times a layer's input width count as thin (issue 9)."""


def thin_calibration(tokens: int, seqlen: int, layer: str, in_features: int) -> str:
    """A one-line warning (without a ``warning:`` prefix) when ``tokens`` calibration tokens are
    too few for a layer, else ``""``.

    Below ``2 k`` tokens for a layer with ``k`` inputs, its ``k x k`` Hessian is estimated from
    fewer than two samples per dimension (rank-deficient below ``k``): the OBS solve then leans
    on the damping and its weight updates fit the calibration tokens rather than the text.

    Args:
        tokens: calibration tokens (``nsamples x seqlen``).
        seqlen: tokens per calibration sequence (to say how many sequences are needed).
        layer: the widest pruned layer's name, e.g. ``mlp.down_proj``.
        in_features: its input size ``k``.
    """
    need = THIN_CALIBRATION_FACTOR * in_features
    if tokens >= need or in_features <= 0:
        return ""
    samples = -(-need // max(seqlen, 1))
    return (
        f"thin calibration: {tokens} tokens are fewer than {THIN_CALIBRATION_FACTOR}x "
        f"the {in_features} inputs of {layer}, so its Hessian is "
        f"{'rank-deficient' if tokens < in_features else 'poorly estimated'}: use --nsamples "
        f"{samples} or more at --seqlen {seqlen}"
    )


def thin_calibration_for(config: RunConfig) -> str:
    """:func:`thin_calibration` for a run, from the model's sizes known without loading it
    (``""`` when they are unknown: the run itself checks again once the model is loaded)."""
    from solver.io.inputs import model_facts

    facts = model_facts(config.model)
    if config.method not in ("duogpt", "sparsegpt") or not facts.hidden:
        return ""
    hidden, intermediate = facts.hidden, facts.intermediate or 4 * facts.hidden
    layer, width = ("mlp.down_proj", intermediate) if intermediate >= hidden else ("q_proj", hidden)
    return thin_calibration(config.nsamples * config.seqlen, config.seqlen, layer, width)
