"""The solver's event stream (ARCHITECTURE.md, "One event stream").

Every consumer — the run store, the TUI, the CLI and the report — reads the same events. Events
are small frozen dataclasses of plain values; each has a ``kind`` and ``t``, the seconds since
the run started. They serialise to one JSON line each and read back equal.

A run's stream ends with exactly one terminal event: :class:`Finished`, :class:`Cancelled` or
:class:`Failed`. The solver makes none of them: its generator *returns* :class:`RunTotals` when it
gets to the end and raises when it does not, and the runner (:mod:`duogpt_tui.runner`) makes the
terminal event from that — the one place where terminal events are made. A measurement made
later on the saved run (:class:`DecodeSpeedMeasured`, ``duogpt speed RUN_DIR``) is appended after
the terminal event.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base class: ``t`` is the time offset in seconds from the run's start."""

    kind: ClassVar[str] = "event"
    t: float = 0.0


@dataclass(frozen=True)
class RunStarted(Event):
    """The run has loaded its model and data and is about to prune.

    Attributes:
        config: the run's configuration (``RunConfig.to_dict()``).
        model: a readable model name (the config's model spec or the hub id).
        family: the model family found by the adapter (``llama``, ``qwen2``...).
        device: the device the blocks are solved on (``cpu``, ``cuda:0``).
        dtype: the model's parameter dtype.
        n_blocks: decoder blocks in the model.
        n_layers: prunable linear layers in all decoder blocks.
        n_params: all parameters of the model.
        n_prunable_params: parameters of the prunable linear layers.
        versions: library versions (python, torch, transformers, duogpt-tui).
        calib: a description of the calibration data (source, samples, seqlen, tokens).
        host: a description of the machine (cpu count, memory, accelerator name).
    """

    kind: ClassVar[str] = "run_started"
    config: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    family: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    n_blocks: int = 0
    n_layers: int = 0
    n_params: int = 0
    n_prunable_params: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    calib: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress(Event):
    """High-rate progress inside a phase (consumers may drop all but the latest).

    Attributes:
        phase: ``load``, ``calibrate``, ``prune`` or ``eval``.
        done: units of work done in this phase.
        total: units of work in this phase.
        label: what is being worked on, e.g. ``block 3 mlp.down_proj``.
    """

    kind: ClassVar[str] = "progress"
    phase: str = ""
    done: int = 0
    total: int = 0
    label: str = ""


@dataclass(frozen=True)
class BlockStarted(Event):
    """A decoder block is about to be pruned."""

    kind: ClassVar[str] = "block_started"
    block: int = 0
    n_blocks: int = 0


@dataclass(frozen=True)
class LayerSolved(Event):
    """One linear layer was pruned.

    Attributes:
        block: decoder block index.
        name: the layer's name inside the block, e.g. ``self_attn.q_proj``.
        layer_type: short type, one of ``q k v o gate up down`` (or the last name part).
        shape: ``[out_features, in_features]``.
        weight_sparsity: achieved fraction of zero weights.
        act_sparsity: measured fraction of zero inputs on the calibration data.
        error_before: normalised layer objective ``||W X^ - W X~||^2 / ||W X~||^2`` before pruning.
        error_after: the same with the pruned weights ``W'``.
        seconds: wall time of the solve (statistics excluded).
        histogram: bin counts of per-row weight density over ``histogram_edges``.
        histogram_edges: the bins' edges (len(histogram) + 1 values in [0, 1]).
        damping: the relative damping that the Cholesky factorisation finally used.
        retries: how many times the damping had to be raised.
        decode: estimated bytes and FLOPs of one decode step of the pruned layer, dense vs
            weight-sparse vs activation-sparse vs dual-sparse (:mod:`solver.math.speedup`, keys such
            as ``dual_bytes``); empty when not estimated.
        alpha: the residual scale DuoGPT used for this layer (0 for the other methods).
        heldout: with held-out alpha selection, each candidate alpha (as text, e.g. ``"0.125"``)
            -> the layer objective on the held-out calibration sequences; the lowest was used.
            Empty otherwise.
    """

    kind: ClassVar[str] = "layer_solved"
    block: int = 0
    name: str = ""
    layer_type: str = ""
    shape: list[int] = field(default_factory=list)
    weight_sparsity: float = 0.0
    act_sparsity: float = 0.0
    error_before: float = 0.0
    error_after: float = 0.0
    seconds: float = 0.0
    histogram: list[int] = field(default_factory=list)
    histogram_edges: list[float] = field(default_factory=list)
    damping: float = 0.0
    retries: int = 0
    decode: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.0
    heldout: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BlockFinished(Event):
    """A decoder block is pruned and the compressed stream has moved past it.

    Attributes:
        block: decoder block index.
        seconds: wall time for the whole block (forward passes, statistics, solves).
        weight_sparsity: achieved weight sparsity over the block's prunable layers.
        act_sparsity: mean measured activation sparsity over the block's prunable layers.
        peak_memory_mb: peak resident memory of the process (or the accelerator) so far.
        timings: seconds split by part: ``forward``, ``statistics``, ``solve``.
    """

    kind: ClassVar[str] = "block_finished"
    block: int = 0
    seconds: float = 0.0
    weight_sparsity: float = 0.0
    act_sparsity: float = 0.0
    peak_memory_mb: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PerplexityMeasured(Event):
    """A perplexity figure with the protocol that produced it.

    Attributes:
        label: ``dense`` (dense weights, dense activations), ``dense_act`` (dense weights with
            the run's activation sparsity), ``pruned`` (the final model) or ``proxy`` (a cheap
            estimate during the run, after ``block``).
        ppl: the perplexity.
        text: the evaluation text's name.
        windows: number of non-overlapping windows evaluated.
        seqlen: tokens per window.
        act_sparsity: activation sparsity applied during evaluation.
        block: for ``proxy``, the last block pruned; otherwise -1.
        seconds: wall time of the evaluation.
        protocol: how the windows were cut (:func:`solver.io.data.eval_sample`): ``text``,
            ``text_sha256``, ``chars``, ``text_tokens``, ``placement``, ``token_spans``, ``bos``,
            ``tokenizer``... Empty in runs recorded before it existed.
    """

    kind: ClassVar[str] = "perplexity"
    label: str = ""
    ppl: float = 0.0
    text: str = ""
    windows: int = 0
    seqlen: int = 0
    act_sparsity: float = 0.0
    block: int = -1
    seconds: float = 0.0
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TasksMeasured(Event):
    """Zero-shot task accuracies of the model (lm-evaluation-harness, ALGORITHM.md §7).

    Attributes:
        label: ``dense`` (before pruning, dense activations) or ``pruned`` (the final model,
            with the run's activation sparsity).
        tasks: task name -> ``{"acc", "acc_norm", "acc_stderr", "n"}`` (a figure the task
            does not define is None; ``n`` is the number of examples scored).
        limit: the examples asked for per task (0: each task's default).
        act_sparsity: activation sparsity measured during the evaluation.
        seconds: wall time of all the tasks.
    """

    kind: ClassVar[str] = "tasks"
    label: str = ""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    limit: int = 0
    act_sparsity: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class DecodeSpeedMeasured(Event):
    """Measured batch-1 decode speed of the run's pruned model (``duogpt speed RUN_DIR``,
    :func:`solver.kernels.speed.measure`), recorded after the run: it follows the terminal
    event. A run measured several times holds one event per measurement; readers use the latest.

    Older versions of the workbench skip this kind of event (an unknown kind), and a field
    added later reads back as its default, as for every event.

    Attributes:
        t: the run's latest time offset when it was recorded (a measurement after the run adds
            no time to the run; :attr:`date` says when it was made).
        date: when it was measured (local time, ``YYYY-mm-ddTHH:MM:SS``).
        device: the device measured on (``cpu``, ``cuda:0``).
        dtype: the model's dtype during the measurement (``float32`` on the CPU).
        backend: the kernels used (``cpp``, ``triton``, ``torch-fallback``).
        threads: torch CPU threads during the measurement.
        tokens: tokens decoded per measurement (the prefill excluded).
        act_sparsity: the run's activation sparsity applied while decoding.
        act_rule: the activation rule (``topk``, ``threshold``).
        dense_tokens_per_s: end-to-end decode speed of the dense (masked) model.
        act_tokens_per_s: the same with the activation-sparse kernels only.
        dual_tokens_per_s: the same with the dual-sparse kernels.
        speedup_act: ``act_tokens_per_s / dense_tokens_per_s``.
        speedup_dual: ``dual_tokens_per_s / dense_tokens_per_s``.
        same_tokens: both sparse paths decoded exactly the masked dense model's tokens.
        act_same_tokens: the activation-sparse path did.
        dual_same_tokens: the dual-sparse path did.
        layers: per layer shape (``shape``, ``layers``, then ``{mode}_us``, ``{mode}_x`` and
            ``{mode}_bound`` for the modes ``dense act weight dual``): one GEMV's microseconds,
            its speedup over dense and the byte bound; the last row (``all``) weights each shape
            by its number of layers.
        host: a description of the machine (as :attr:`RunStarted.host`).
        notes: what the measurement noted (a fallback backend, missing settings).
    """

    kind: ClassVar[str] = "decode_speed"
    date: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = ""
    threads: int = 0
    tokens: int = 0
    act_sparsity: float = 0.0
    act_rule: str = ""
    dense_tokens_per_s: float = 0.0
    act_tokens_per_s: float = 0.0
    dual_tokens_per_s: float = 0.0
    speedup_act: float = 0.0
    speedup_dual: float = 0.0
    same_tokens: bool = False
    act_same_tokens: bool = False
    dual_same_tokens: bool = False
    layers: list[dict[str, Any]] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Note(Event):
    """A notice for the user: ``level`` is ``info`` or ``warning``."""

    kind: ClassVar[str] = "note"
    level: str = "info"
    text: str = ""


@dataclass(frozen=True)
class RunTotals:
    """What a completed run amounts to: the value the solver's generator returns (not an event).

    The runner makes :class:`Finished` from it, field for field (``t`` is ``seconds``).

    Attributes:
        seconds: total wall time.
        weight_sparsity: achieved weight sparsity over all prunable layers.
        act_sparsity: mean measured activation sparsity over all prunable layers.
        peak_memory_mb: peak memory of the run.
        model_dir: where the pruned model was saved ("" when not saved).
        timings: total seconds by part (``load``, ``forward``, ``statistics``, ``solve``, ``eval``).
    """

    seconds: float = 0.0
    weight_sparsity: float = 0.0
    act_sparsity: float = 0.0
    peak_memory_mb: float = 0.0
    model_dir: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished(RunTotals, Event):
    """Terminal event: the run completed; ``t`` then the fields of its :class:`RunTotals`.

    Made only by the runner, from the totals that the solver's generator returned.
    """

    kind: ClassVar[str] = "finished"


@dataclass(frozen=True)
class Cancelled(Event):
    """Terminal event: the run was cancelled; ``block`` is the block it stopped in (-1: before)."""

    kind: ClassVar[str] = "cancelled"
    block: int = -1
    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class Failed(Event):
    """Terminal event: the run failed.

    Attributes:
        error: one actionable line (what went wrong, what to do).
        block: the block it failed in (-1: before pruning started).
        category: ``input`` (bad input found while loading: exit code 2) or ``run`` (exit code 1).
        detail: the traceback, for ``--debug`` and the log.
    """

    kind: ClassVar[str] = "failed"
    error: str = ""
    block: int = -1
    category: str = "run"
    detail: str = ""


TERMINAL_KINDS = frozenset({Finished.kind, Cancelled.kind, Failed.kind})

EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        Progress,
        BlockStarted,
        LayerSolved,
        BlockFinished,
        PerplexityMeasured,
        TasksMeasured,
        DecodeSpeedMeasured,
        Note,
        Finished,
        Cancelled,
        Failed,
    )
}


def is_terminal(event: Event) -> bool:
    """True for the run's one final event (finished, cancelled or failed)."""
    return event.kind in TERMINAL_KINDS


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with the event's ``kind`` first."""
    return {"kind": event.kind, **dataclasses.asdict(event)}


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`to_dict` output; unknown keys are ignored.

    Raises:
        ValueError: the dict names no known event kind.
    """
    kind = data.get("kind")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def to_json(event: Event) -> str:
    """One JSON line (no trailing newline)."""
    return json.dumps(to_dict(event), ensure_ascii=False, allow_nan=True)


def from_json(line: str) -> Event:
    """Parse one line written by :func:`to_json`."""
    return from_dict(json.loads(line))
