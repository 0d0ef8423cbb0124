"""One typed view of a run, folded from its events: the only fold of the event stream.

Everything that shows a run reads it through a :class:`RunView`: the run store's listing
(:class:`~duogpt_tui.runstore.RunSummary`), the CLI's result line and ``--json``
(:mod:`duogpt_tui.summary`), the CLI's progress (:mod:`duogpt_tui.progress`), the Markdown report
(:mod:`duogpt_tui.report`), the TUI's event log (:class:`~duogpt_tui.eventlog.EventLog` *is* a
RunView that the App feeds one event at a time) and the benchmarks' summaries. So a figure, the
ETA included, is computed once and reads the same everywhere.

The view is built with :meth:`RunView.of` from a list of events or grown with :meth:`RunView.add`;
both give the same view. High-rate :class:`~solver.events.Progress` events are not kept (only the
latest one and the time it carried). Nothing here imports textual, rich, typer or torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError


@dataclass
class RunView:
    """What a run's events say, folded in order.

    Attributes:
        config: the run's configuration (``RunConfig.to_dict()``): the run-started event's, else
            the one given to :meth:`of` (a run that failed before it started).
        started: the run-started event, once it arrived.
        events: every event except :class:`~solver.events.Progress`, in order.
        layers: the layer-solved events, in order.
        blocks: the block-finished events, in order.
        perplexities: the perplexity events, in order.
        task_scores: the zero-shot task events (``dense``, ``pruned``), in order.
        speed_measurements: the decode-speed measurements of the saved run (``duogpt speed``,
            recorded after the run), in order; :attr:`decode_speed` is the latest.
        notes: the notes and warnings of the run, in order.
        terminal: the run's final event (finished, cancelled or failed), once it arrived.
        progress: the latest progress event, if any.
        progress_since: the time offset at which the latest progress's phase and label began
            (None without progress): how long the current phase has been going.
        current_block: the block being pruned (-1 before the first one).
        pruning_since: the time offset of the first block-started event (None before it).
        last_t: the time offset of the latest event, progress included (None without events).
        warnings: what was wrong with the run's files when they were read (corrupt lines
            skipped), one line each; empty for a run read whole or followed live.
    """

    config: dict[str, Any] = field(default_factory=dict)
    started: ev.RunStarted | None = None
    events: list[ev.Event] = field(default_factory=list)
    layers: list[ev.LayerSolved] = field(default_factory=list)
    blocks: list[ev.BlockFinished] = field(default_factory=list)
    perplexities: list[ev.PerplexityMeasured] = field(default_factory=list)
    task_scores: list[ev.TasksMeasured] = field(default_factory=list)
    speed_measurements: list[ev.DecodeSpeedMeasured] = field(default_factory=list)
    notes: list[ev.Note] = field(default_factory=list)
    terminal: ev.Event | None = None
    progress: ev.Progress | None = None
    progress_since: float | None = None
    current_block: int = -1
    pruning_since: float | None = None
    last_t: float | None = None
    warnings: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------------------- folding

    @classmethod
    def of(
        cls,
        events: Iterable[ev.Event],
        config: dict[str, Any] | None = None,
        warnings: Iterable[str] = (),
    ) -> RunView:
        """The view of ``events``.

        Args:
            events: the run's events in order (a partial list is fine).
            config: the run's configuration, used only when the events hold no run-started
                event with one.
            warnings: what was wrong with the run's files (see :attr:`warnings`).
        """
        view = cls(config=dict(config or {}), warnings=list(warnings))
        view.extend(events)
        return view

    def extend(self, events: Iterable[ev.Event]) -> None:
        """Add several events in order."""
        for event in events:
            self.add(event)

    def add(self, event: ev.Event) -> None:
        """Fold one more event into the view."""
        self.last_t = event.t
        if isinstance(event, ev.Progress):
            previous = self.progress
            if previous is None or (previous.phase, previous.label) != (event.phase, event.label):
                self.progress_since = event.t
            self.progress = event
            return
        self.events.append(event)
        if isinstance(event, ev.RunStarted):
            if self.started is None:
                self.started = event
                if event.config:
                    self.config = dict(event.config)
        elif isinstance(event, ev.BlockStarted):
            self.current_block = event.block
            if self.pruning_since is None:
                self.pruning_since = event.t
        elif isinstance(event, ev.LayerSolved):
            self.layers.append(event)
            self.current_block = event.block
        elif isinstance(event, ev.BlockFinished):
            self.blocks.append(event)
        elif isinstance(event, ev.PerplexityMeasured):
            self.perplexities.append(event)
        elif isinstance(event, ev.TasksMeasured):
            self.task_scores.append(event)
        elif isinstance(event, ev.DecodeSpeedMeasured):
            self.speed_measurements.append(event)
        elif isinstance(event, ev.Note):
            self.notes.append(event)
        elif ev.is_terminal(event) and self.terminal is None:
            self.terminal = event

    def clear(self) -> None:
        """Forget everything (back to the view of no events)."""
        for spec in dataclasses.fields(RunView):
            factory = spec.default_factory
            default = factory() if factory is not dataclasses.MISSING else spec.default
            setattr(self, spec.name, default)

    # ----------------------------------------------------------------------------- how it ended

    @property
    def status(self) -> str:
        """``finished``, ``cancelled`` or ``failed`` (the terminal event), else ``running``.

        A caller holding a run directory should prefer ``RunDir.status``, which tells a running
        run from an interrupted one.
        """
        return self.terminal.kind if self.terminal is not None else "running"

    @property
    def finished(self) -> ev.Finished | None:
        """The finished event, when the run finished."""
        return self.terminal if isinstance(self.terminal, ev.Finished) else None

    @property
    def failed(self) -> ev.Failed | None:
        """The failed event, when the run failed."""
        return self.terminal if isinstance(self.terminal, ev.Failed) else None

    @property
    def stopped_block(self) -> int | None:
        """The block a cancelled or failed run stopped in (-1: before pruning), else None."""
        terminal = self.terminal
        return terminal.block if isinstance(terminal, ev.Cancelled | ev.Failed) else None

    @property
    def error(self) -> str | None:
        """A failed run's error message."""
        return self.failed.error if self.failed else None

    @property
    def category(self) -> str | None:
        """A failed run's error category: ``input`` or ``run``."""
        return self.failed.category if self.failed else None

    # ----------------------------------------------------------------------------- what was run

    @property
    def method(self) -> str:
        """The pruning method (empty when unknown)."""
        return str(self.config.get("method", ""))

    @property
    def model(self) -> str:
        """The model's name: as loaded, else as configured."""
        return self.started.model if self.started else str(self.config.get("model", ""))

    @property
    def family(self) -> str:
        """The model family (empty before the run started)."""
        return self.started.family if self.started else ""

    @property
    def layout(self) -> str:
        """What discovery found in the model, as the run's note says it: the family, the block
        list and block 0's groups (``llama: 2 blocks in model.layers; groups [...] -> [...]``);
        empty until that note arrived."""
        family = self.family
        if not family:
            return ""
        for note in self.notes:
            if note.text.startswith(f"{family}: ") and "; groups " in note.text:
                return note.text
        return ""

    @property
    def pattern(self) -> str:
        """``unstructured`` or ``N:M`` (empty when unknown)."""
        return str(self.config.get("pattern", ""))

    @property
    def device(self) -> str:
        """The device the run used (empty before the run started)."""
        return self.started.device if self.started else ""

    @property
    def ranks(self) -> int:
        """How many ranks (processes) share the calibration (``--nproc``; 1 when unknown)."""
        value = self.config.get("nproc", 1)
        return value if isinstance(value, int) and value > 1 else 1

    @property
    def n_blocks(self) -> int:
        """Decoder blocks in the model (0 until the run started)."""
        return self.started.n_blocks if self.started else 0

    @property
    def n_layers(self) -> int:
        """Prunable layers in the model (0 until the run started)."""
        return self.started.n_layers if self.started else 0

    @property
    def target_weight_sparsity(self) -> float | None:
        """The weight sparsity the configuration asked for (N/M for N:M, 0 for dense)."""
        if not self.config:
            return None
        try:
            return RunConfig.from_dict(self.config).target_weight_sparsity
        except (InputError, TypeError, ValueError):
            return None

    @property
    def target_act_sparsity(self) -> float | None:
        """The activation sparsity the configuration asked for."""
        value = self.config.get("act_sparsity")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None

    # ----------------------------------------------------------------------------- figures

    @property
    def blocks_done(self) -> int:
        """Blocks pruned so far."""
        return len(self.blocks)

    @property
    def layers_done(self) -> int:
        """Layers pruned so far."""
        return len(self.layers)

    @property
    def weight_sparsity(self) -> float | None:
        """Achieved weight sparsity: the finished event's, else over the layers pruned so far
        (weighted by their sizes); None before any layer was pruned."""
        if self.finished is not None:
            return self.finished.weight_sparsity
        if not self.layers:
            return None
        sizes = [math.prod(layer.shape) if layer.shape else 1 for layer in self.layers]
        zeros = sum(
            layer.weight_sparsity * size for layer, size in zip(self.layers, sizes, strict=True)
        )
        return zeros / sum(sizes) if sum(sizes) else None

    @property
    def act_sparsity(self) -> float | None:
        """Measured activation sparsity: the finished event's, else the mean over the layers
        pruned so far; None before any layer was pruned."""
        if self.finished is not None:
            return self.finished.act_sparsity
        if not self.layers:
            return None
        return sum(layer.act_sparsity for layer in self.layers) / len(self.layers)

    def tasks(self, label: str) -> ev.TasksMeasured | None:
        """The latest zero-shot task scores with ``label`` (``dense`` or ``pruned``), if any."""
        found = [t for t in self.task_scores if t.label == label]
        return found[-1] if found else None

    @property
    def decode_speed(self) -> ev.DecodeSpeedMeasured | None:
        """The latest measured decode speed (``duogpt speed RUN_DIR``), if any."""
        return self.speed_measurements[-1] if self.speed_measurements else None

    @property
    def speedup_dual(self) -> float | None:
        """The latest measured end-to-end dual-sparse decode speedup over dense, if any."""
        measured = self.decode_speed
        return measured.speedup_dual if measured is not None else None

    def perplexity(self, label: str) -> ev.PerplexityMeasured | None:
        """The last perplexity measured with ``label`` (``dense``, ``dense_act``, ``pruned``)."""
        found = [p for p in self.perplexities if p.label == label]
        return found[-1] if found else None

    def reference_perplexities(self) -> dict[str, ev.PerplexityMeasured]:
        """The last perplexity of each label other than ``proxy``, in order of first appearance."""
        return {p.label: p for p in self.perplexities if p.label != "proxy"}

    @property
    def proxies(self) -> list[ev.PerplexityMeasured]:
        """The proxy perplexities measured during the run, in order."""
        return [p for p in self.perplexities if p.label == "proxy"]

    @property
    def ppl_dense(self) -> float | None:
        """The dense model's perplexity, when measured."""
        return self._ppl("dense")

    @property
    def ppl_dense_act(self) -> float | None:
        """The dense model's perplexity with activation sparsity, when measured."""
        return self._ppl("dense_act")

    @property
    def ppl(self) -> float | None:
        """The pruned model's perplexity, when measured."""
        return self._ppl("pruned")

    def _ppl(self, label: str) -> float | None:
        """The value of :meth:`perplexity`."""
        found = self.perplexity(label)
        return found.ppl if found is not None else None

    @property
    def seconds(self) -> float | None:
        """Wall time: the finished event's, else the latest event's time offset."""
        if self.finished is not None:
            return self.finished.seconds
        return self.last_t

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the latest event or progress (0 without events)."""
        times = [e.t for e in self.events[-1:]]
        if self.progress is not None:
            times.append(self.progress.t)
        return max(times, default=0.0)

    @property
    def peak_memory_mb(self) -> float | None:
        """Peak memory: the finished event's, else the largest per-block figure."""
        if self.finished is not None:
            return self.finished.peak_memory_mb
        return max(block.peak_memory_mb for block in self.blocks) if self.blocks else None

    @property
    def final_evaluation(self) -> bool:
        """Whether the run is measuring the pruned model now (the phase after the last block)."""
        progress = self.progress
        return (
            self.terminal is None
            and progress is not None
            and progress.phase == "eval"
            and progress.label == "pruned"
            and self.perplexity("pruned") is None
        )

    def eval_estimate(self) -> float | None:
        """Seconds the final evaluation should take: the dense model's measurement on the same
        windows (with activation sparsity when there is one); None when not known."""
        if not self.config.get("eval_windows", 1):
            return 0.0
        for label in ("dense_act", "dense"):
            found = self.perplexity(label)
            if found is not None and found.seconds > 0:
                return found.seconds
        return None

    def eta_seconds(self) -> float | None:
        """Seconds left: while pruning, the mean time per solved layer since the first block
        started times the layers left, plus the final evaluation's estimate
        (:meth:`eval_estimate`); during the final evaluation, its estimate less the time it
        has run. None once the run ended, before the first layer, or when the final
        evaluation outruns its estimate (the time left is then not known)."""
        if self.terminal is not None:
            return None
        evaluation = self.eval_estimate()
        if self.final_evaluation:
            if not evaluation or self.progress_since is None or self.last_t is None:
                return None
            left = evaluation - (self.last_t - self.progress_since)
            return left if left > 0 else None
        if not self.layers or not self.n_layers:
            return None
        start = self.pruning_since if self.pruning_since is not None else 0.0
        spent = max(self.layers[-1].t - start, 0.0)
        left = max(self.n_layers - len(self.layers), 0)
        if not left and evaluation is None:  # only the evaluation is left, of unknown length
            return None
        return spent / len(self.layers) * left + (evaluation or 0.0)

    def headline(self) -> dict[str, Any]:
        """The headline figures as a JSON-ready dict (what ``duogpt prune --json`` builds on).

        Returns:
            ``status``, ``method``, ``model``, ``family``, ``pattern``, ``device``,
            ``target_weight_sparsity``, ``target_act_sparsity``, ``weight_sparsity``,
            ``act_sparsity``, ``ppl_dense``, ``ppl_dense_act``, ``ppl``, ``seconds``,
            ``peak_memory_mb``, ``blocks_done``, ``n_blocks`` and ``n_layers`` (None before the
            run started), ``layers_done``, ``stopped_block``, ``error`` and ``category``.
        """
        return {
            "status": self.status,
            "method": self.method,
            "model": self.model,
            "family": self.family,
            "pattern": self.pattern,
            "device": self.device,
            "target_weight_sparsity": self.target_weight_sparsity,
            "target_act_sparsity": self.target_act_sparsity,
            "weight_sparsity": self.weight_sparsity,
            "act_sparsity": self.act_sparsity,
            "ppl_dense": self.ppl_dense,
            "ppl_dense_act": self.ppl_dense_act,
            "ppl": self.ppl,
            "seconds": self.seconds,
            "peak_memory_mb": self.peak_memory_mb,
            "blocks_done": self.blocks_done,
            "n_blocks": self.n_blocks if self.started else None,
            "layers_done": self.layers_done,
            "n_layers": self.n_layers if self.started else None,
            "stopped_block": self.stopped_block,
            "error": self.error,
            "category": self.category,
        }
