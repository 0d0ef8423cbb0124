"""The setup screen's pre-flight line: a rough estimate of memory and time for the settings.

The estimate is a documented back-of-the-envelope formula, not a measurement (the run's own
events carry the measured figures). For a LLaMA-style model with ``P`` parameters, ``P_l``
prunable parameters, hidden size ``h``, MLP size ``i``, ``T_c = nsamples * seqlen`` calibration
tokens and ``T_e = eval_windows * seqlen`` evaluation tokens:

* memory = 4 bytes x (``P`` weights + two activation streams of ``T_c x max(h, i)`` values each
  for inputs and outputs + two ``k x k`` statistics matrices for the widest layer + one window of
  logits ``seqlen x vocab``) + :data:`BASE_MEMORY_MB` for Python, torch and the tokenizer;
* work = ``6 P_l T_c`` (dense and compressed forward passes, the compressed one twice)
  + ``sum over layers (4 k^2 T_c + 2 n k^2 + 1.5 k^3)`` (statistics, column updates, Cholesky)
  + ``2 P T_e`` per perplexity evaluation (dense, dense with sparse activations, pruned, and the
  proxies), divided by an assumed throughput (:data:`THROUGHPUT_FLOPS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from textual.widgets import Static

from duogpt_tui.eventlog import format_seconds
from solver.config import RunConfig

BASE_MEMORY_MB = 600.0
"""Resident memory of the process before the model is loaded (Python, torch, tokenizer)."""

THROUGHPUT_FLOPS = {"cpu": 2.0e10, "cuda": 2.0e12}
"""Assumed sustained float32 throughput: 20 GFLOP/s on a small CPU, 2 TFLOP/s on a GPU."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA-style decoder that the estimate needs.

    Attributes:
        hidden: hidden size ``h``.
        intermediate: MLP size ``i``.
        n_blocks: decoder blocks.
        vocab: vocabulary size.
        kv_dim: width of the k and v projections (``h`` without grouped-query attention).
        tied: whether ``lm_head`` shares the embedding's weights.
    """

    hidden: int
    intermediate: int
    n_blocks: int
    vocab: int
    kv_dim: int
    tied: bool = True

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of the seven prunable layers of one block (q k v o gate up down)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]

    @property
    def n_prunable(self) -> int:
        """Parameters of all prunable linear layers."""
        return self.n_blocks * sum(n * k for n, k in self.layer_shapes)

    @property
    def n_params(self) -> int:
        """All parameters (embeddings, prunable layers, lm_head when untied; norms ignored)."""
        embed = self.vocab * self.hidden
        return self.n_prunable + embed * (1 if self.tied else 2)


KNOWN_SHAPES = {
    "smollm2-135m": ModelShape(
        hidden=576, intermediate=1536, n_blocks=30, vocab=49152, kv_dim=192, tied=True
    ),
}
"""Shapes of the built-in models whose sizes are known without loading them."""


def model_shape(spec: str) -> ModelShape | None:
    """The shape of a built-in model or of a local model directory's ``config.json``.

    Returns:
        None when the size cannot be known without loading the model (hub ids, GGUF files).
    """
    if spec in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec]
    config_path = Path(spec).expanduser() / "config.json"
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        hidden = int(data["hidden_size"])
        heads = int(data.get("num_attention_heads") or 1)
        kv_heads = int(data.get("num_key_value_heads") or heads)
        return ModelShape(
            hidden=hidden,
            intermediate=int(data.get("intermediate_size") or 4 * hidden),
            n_blocks=int(data["num_hidden_layers"]),
            vocab=int(data.get("vocab_size") or 32000),
            kv_dim=hidden * kv_heads // max(heads, 1),
            tied=bool(data.get("tie_word_embeddings", False)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Estimate:
    """A rough estimate of a run's cost.

    Attributes:
        memory_mb: peak resident memory.
        seconds: wall time.
        flops: floating-point operations counted by the formula.
        device: ``cpu`` or ``cuda``, the throughput assumed.
    """

    memory_mb: float
    seconds: float
    flops: float
    device: str


def estimate(config: RunConfig, shape: ModelShape, device: str = "cpu") -> Estimate:
    """Estimate memory and time of ``config`` on a model of ``shape`` (see the module text)."""
    calib_tokens = config.nsamples * config.seqlen
    eval_tokens = config.eval_windows * config.seqlen
    widest = max(shape.hidden, shape.intermediate)
    values = (
        shape.n_params
        + 4 * calib_tokens * widest
        + 2 * widest * widest
        + config.seqlen * shape.vocab
    )
    memory_mb = BASE_MEMORY_MB + 4 * values / 2**20
    flops = 6.0 * shape.n_prunable * calib_tokens
    if config.method != "dense":
        for n, k in shape.layer_shapes:
            flops += shape.n_blocks * (4.0 * k * k * calib_tokens + 2.0 * n * k * k + 1.5 * k**3)
    evaluations = 3 + (shape.n_blocks // config.proxy_every if config.proxy_every else 0)
    proxy_share = config.proxy_windows / max(config.eval_windows, 1)
    flops += 2.0 * shape.n_params * eval_tokens * (3 + (evaluations - 3) * proxy_share)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return Estimate(memory_mb, flops / THROUGHPUT_FLOPS[kind], flops, kind)


def describe(config: RunConfig, device: str = "cpu") -> str:
    """The pre-flight line for ``config`` (says when the model's size is unknown)."""
    tokens = config.nsamples * config.seqlen
    shape = model_shape(config.model)
    if shape is None:
        return (
            f"pre-flight: {tokens:,} calibration tokens; model size unknown until it is loaded "
            "(no estimate)"
        )
    guess = estimate(config, shape, device)
    memory = (
        f"{guess.memory_mb / 1024:.1f} GB"
        if guess.memory_mb >= 1024
        else (f"{guess.memory_mb:.0f} MB")
    )
    rate = THROUGHPUT_FLOPS[guess.device] / 1e9
    return (
        f"pre-flight estimate: ~{memory} memory, ~{format_seconds(guess.seconds)} on "
        f"{guess.device} ({shape.n_params / 1e6:.0f}M params, {tokens:,} calibration tokens, "
        f"{rate:g} GFLOP/s assumed)"
    )


class PreflightLine(Static):
    """One line under the setup form: the estimate, or why there is none."""

    DEFAULT_CSS = """
    PreflightLine {
        height: auto;
        padding: 0 1;
        color: $text-muted;
        background: $boost;
    }
    PreflightLine.-invalid {
        color: $text-error;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """An empty line; text is set by :meth:`show` (never parsed as markup)."""
        super().__init__("", markup=False, id=id, classes=classes)

    def show(self, config: RunConfig | None, device: str = "cpu", problem: str = "") -> None:
        """Show the estimate for ``config``, or ``problem`` when the settings are invalid."""
        self.set_class(config is None, "-invalid")
        if config is None:
            self.update(f"pre-flight: {problem or 'fix the highlighted fields'}")
        else:
            self.update(describe(config, device))
