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
  float32 loss terms ``(T_b + 2 S) V`` (``S`` = seqlen, ``V`` = vocabulary).
* **time**: ``6 P_l T_c`` (dense and compressed forward passes) + per layer ``4 k^2 T_c``
  (statistics) and ``2 n k^2 + 1.5 k^3`` (the OBC sweep and Cholesky) + ``2 P T_e`` per
  perplexity evaluation, divided by :data:`THROUGHPUT_FLOPS`, plus :data:`LAYER_OVERHEAD_S` per
  layer and :data:`STARTUP_S`.

Sizes come from the caller, else from :func:`solver.io.inputs.model_facts` (built-in models, a
folder's ``config.json``, a GGUF header, the hub cache): nothing is loaded or downloaded.
"""

from __future__ import annotations

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

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Estimate:
    """A rough estimate of a run's cost.

    Attributes:
        memory_mb: peak memory (host memory on CPU, accelerator memory on CUDA).
        seconds: wall time; 0 when the model's size is unknown.
        detail: what the figures are made of, in one line.
    """

    memory_mb: float
    seconds: float
    detail: str


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
) -> Estimate:
    """Estimate the memory and time of ``config`` (see the module text).

    Args:
        config: the run.
        n_params: all parameters of the model; default: from the model spec.
        hidden: hidden size; default: from the model spec.
        layers: decoder blocks; default: from the model spec.
        intermediate: MLP size; default: from the model spec (else ``4 x hidden``).
        device: ``cpu`` or ``cuda[:N]``: the throughput assumed.

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
    vocab = facts.vocab if facts is not None and facts.vocab else 32000
    calib = f"calibration {config.nsamples} x {config.seqlen} tokens"
    if hidden is None or layers is None:
        return Estimate(
            BASE_MEMORY_MB,
            0.0,
            f"model size unknown until it is loaded; {calib}",
        )
    intermediate = intermediate or 4 * hidden
    n_params = n_params or layers * (4 * hidden * hidden + 3 * hidden * intermediate)
    block = block_memory(config.nsamples, config.seqlen, config.batch_size, hidden, intermediate)
    weights_mb = n_params * DTYPE_BYTES.get(config.dtype, 4) / 2**20
    batch = min(config.batch_size, max(config.eval_windows, 1)) * config.eval_len
    logits_mb = (batch + 2 * config.eval_len) * vocab * 4 / 2**20 if config.eval_windows else 0.0
    memory = BASE_MEMORY_MB + weights_mb + block.total + logits_mb
    seconds = _seconds(config, n_params, hidden, layers, intermediate, kind)
    detail = (
        f"{n_params / 1e6:.1f}M params in {config.dtype} {megabytes(weights_mb)}, {calib}, "
        f"one block {megabytes(block.total)}; {THROUGHPUT_FLOPS[kind] / 1e9:g} GFLOP/s assumed "
        f"on {kind}"
    )
    return Estimate(round(memory, 1), round(seconds, 1), detail)


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
