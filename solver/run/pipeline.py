"""The layer-by-layer pruning driver: ``run(config, cancel) -> Iterator[Event]``.

ALGORITHM.md §6. Two streams of calibration hidden states walk the decoder blocks: the *dense*
stream (original weights, dense activations: gives ``X~``) and the *compressed* stream (pruned
upstream blocks and, for DuoGPT, activation sparsity: gives ``X^``). Inside a block the linear
layers are pruned in "true sequential" groups that share an input, so each group is calibrated on
inputs that already reflect the pruning of the groups before it.

The driver is a generator: every consumer (run store, TUI, CLI, report) sees the same events
(:mod:`solver.events`), and the run always ends with exactly one terminal event. It checks the
cancel token between layers and between batches of the long passes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from solver.config import RunConfig
from solver.errors import DuoGPTError, InputError, RunError
from solver.events import (
    BlockFinished,
    BlockStarted,
    Cancelled,
    Event,
    Failed,
    Finished,
    LayerSolved,
    Note,
    PerplexityMeasured,
    Progress,
    RunStarted,
)
from solver.io import checkpoint, inputs, system
from solver.math.activations import (
    ActivationSparsifier,
    calibrate_threshold,
    threshold_sparsify,
    topk_sparsify,
)
from solver.math.masks import apply_mask, magnitude_mask, row_density_histogram, wanda_mask
from solver.math.obc import SolveResult, layer_errors, prune_obc
from solver.math.speedup import layer_decode_costs
from solver.math.stats import LayerStats
from solver.run import estimate
from solver.run.adapters import ModelAdapter, find_adapter, layer_type
from solver.run.capture import (
    capture_block_inputs,
    capture_inputs,
    move_kwargs,
    run_block,
    run_until,
)
from solver.run.evaluate import ACT_SETTINGS_FILE


class CancelToken(Protocol):
    """Anything with ``is_set()``: a ``threading.Event``, a Textual worker's cancelled event."""

    def is_set(self) -> bool:
        """True once the run should stop."""
        ...


class _Never:
    def is_set(self) -> bool:
        return False


class _CancelRequested(Exception):
    """Internal: the cancel token was seen set."""


@dataclass
class _State:
    """What the driver knows about the run so far (owned by one generator, never shared)."""

    block: int = -1
    thresholds: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("load", "forward", "statistics", "solve", "eval"), 0.0
        )
    )
    layer_act: list[float] = field(default_factory=list)  # per solved layer (calibration)
    eval_act: float | None = None  # measured during the final evaluation
    phase: str = "while loading the model"  # where the run is, for a cancel's reason
    model_mb: float = 0.0  # the loaded model's weights
    need: estimate.BlockMemory | None = None  # what one block needs, for an out-of-memory error


def preflight(config: RunConfig) -> None:
    """Cheap checks before a run directory is made or anything is loaded.

    Raises:
        InputError: one actionable line (bad option, missing path, CUDA asked for and absent,
            a damaged model or text file: see :mod:`solver.io.inputs`).
    """
    config.validate()
    system.resolve_device(config.device)
    inputs.check_model(config.model, config.seqlen)
    inputs.check_text("--calib", config.calib, config.nsamples * config.seqlen)
    if config.eval_windows > 0:
        inputs.check_text("--eval", config.eval, config.eval_len)


def run(
    config: RunConfig,
    cancel: CancelToken | None = None,
    workdir: Path | None = None,
    resume: bool = False,
) -> Iterator[Event]:
    """Prune a model as ``config`` says and yield the run's events.

    Never raises for a failed run: failures become one :class:`Failed` event (``category``
    ``input`` for bad input found while loading), a cancel becomes :class:`Cancelled`.

    Args:
        config: what to run.
        cancel: checked between layers and batches; ``None`` never cancels.
        workdir: the run directory; the pruned model goes to ``workdir / "model"`` when
            ``config.save_model`` is set, and per-block checkpoints to
            ``workdir / "checkpoints"`` when ``config.checkpoints`` is set.
        resume: continue from the checkpoint in ``workdir`` (after its last complete block);
            the events before it (run started, dense perplexities, finished blocks) are not
            repeated.
    """
    start = time.monotonic()
    system.tune_allocator()  # large temporaries go back to the OS (peak RSS, issue 4)
    state = _State()
    device = torch.device("cpu")
    try:
        config.validate()
        device = system.resolve_device(config.device)
        driver = _Driver(config, cancel or _Never(), workdir, start, state, device, resume)
        yield from driver.events()
    except _CancelRequested:
        yield Cancelled(t=_since(start), block=state.block, reason=f"cancelled {state.phase}")
    except DuoGPTError as err:
        category = "input" if isinstance(err, InputError) else "run"
        yield Failed(
            t=_since(start),
            error=str(err),
            block=state.block,
            category=category,
            detail=traceback.format_exc(),
        )
    except (torch.OutOfMemoryError, MemoryError) as err:
        yield Failed(
            t=_since(start),
            error=_out_of_memory(err, state, device),
            block=state.block,
            detail=traceback.format_exc(),
        )
    except Exception as err:  # anything else still ends the run with a failed event
        yield Failed(
            t=_since(start),
            error=f"{type(err).__name__}: {err}",
            block=state.block,
            detail=traceback.format_exc(),
        )


def _since(start: float) -> float:
    return round(time.monotonic() - start, 4)


def _out_of_memory(err: BaseException, state: _State, device: torch.device) -> str:
    """One line for an out-of-memory error: where, what it needed, what reduces it."""
    if state.need is not None and state.phase == "while pruning":
        where = f"in block {state.block}"
        need = (
            f"; pruning a block needs {state.need.describe()} on top of the model's "
            f"{estimate.megabytes(state.model_mb)}"
        )
    else:
        where = state.phase
        weights = estimate.megabytes(state.model_mb)
        need = f"; the model's weights alone take {weights}" if state.model_mb else ""
    elsewhere = "--device cpu" if device.type == "cuda" else "a machine with more memory"
    return (
        f"out of memory {where} on {device} ({type(err).__name__}){need}: use fewer "
        f"--nsamples, a shorter --seqlen, a smaller --batch-size, or {elsewhere}"
    )


class _Driver:
    """One run's work, as a generator of events (see :func:`run`)."""

    def __init__(
        self,
        config: RunConfig,
        cancel: CancelToken,
        workdir: Path | None,
        start: float,
        state: _State,
        device: torch.device,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.cancel = cancel
        self.workdir = workdir
        self.start = start
        self.state = state
        self.device = device
        self.nm = config.nm
        self.sparse_calibration = config.method == "duogpt" and config.act_sparsity > 0
        self.resume = resume
        self.checkpoint_dir: Path | None = None
        if workdir is not None and (config.checkpoints or resume):
            self.checkpoint_dir = Path(workdir) / checkpoint.CHECKPOINT_DIR
        if resume and self.checkpoint_dir is None:
            raise InputError("resuming needs the run directory that holds the checkpoint")

    # ------------------------------------------------------------------ helpers
    def t(self) -> float:
        """Seconds since the run started."""
        return _since(self.start)

    def check_cancel(self) -> None:
        """Stop the run if the token is set."""
        if self.cancel.is_set():
            raise _CancelRequested

    def sparsify(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The activation-sparse version of a layer input, as the sparsifier hook makes it."""
        if self.config.act_sparsity <= 0:
            return x
        if self.config.act_rule == "threshold":
            return threshold_sparsify(x, self.state.thresholds[name])
        return topk_sparsify(x, self.config.act_sparsity)

    # ------------------------------------------------------------------ the run
    def events(self) -> Iterator[Event]:
        """The whole run."""
        from solver.io.data import calibration_batch, eval_protocol, eval_windows, load_text
        from solver.io.models import load_model

        config = self.config
        torch.manual_seed(config.seed)
        tick = time.monotonic()
        yield Progress(t=self.t(), phase="load", done=0, total=3, label=f"model {config.model}")
        loaded = load_model(config.model, dtype=getattr(torch, config.dtype))
        model = loaded.model
        adapter = find_adapter(model)
        self.state.model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        self.check_weights(model, adapter)
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        for flag, length in (("--seqlen", config.seqlen), ("--eval-seqlen", config.eval_len)):
            if context and length > context:
                raise InputError(
                    f"{flag} {length} is longer than the model's context of {context} "
                    f"tokens: use {flag} {context} or less"
                )
        self.check_cancel()
        self.state.phase = "while loading the texts"
        yield Progress(t=self.t(), phase="load", done=1, total=3, label=f"text {config.calib}")
        calib_name, calib_text = load_text(config.calib)
        calib = calibration_batch(
            loaded.tokenizer, calib_text, config.nsamples, config.seqlen, config.seed
        )
        del calib_text
        self.check_cancel()
        windows = None
        protocol: dict[str, Any] = {}
        if config.eval_windows > 0:
            yield Progress(t=self.t(), phase="load", done=2, total=3, label=f"text {config.eval}")
            eval_name, eval_text = load_text(config.eval)
            windows = eval_windows(
                loaded.tokenizer, eval_text, config.eval_windows, config.eval_len
            )
            protocol = eval_protocol(eval_name, windows, loaded.tokenizer)
            if windows.shape[0] < config.eval_windows:
                yield Note(
                    t=self.t(),
                    level="warning",
                    text=f"evaluation text {eval_name!r} holds only {windows.shape[0]} windows "
                    f"of {config.eval_len} tokens (asked for {config.eval_windows})",
                )
        self.state.timings["load"] += time.monotonic() - tick
        linears = adapter.all_linears(model)
        self.check_cancel()
        yield Progress(t=self.t(), phase="load", done=3, total=3, label="ready")
        if self.resume:
            yield from self.resumed(model, adapter, calib, windows, protocol)
        else:
            yield from self.fresh(loaded, adapter, calib, windows, protocol, calib_name)
        if windows is not None:
            yield from self.evaluate(model, adapter, windows, protocol, "pruned")
        model_dir = ""
        if config.save_model and self.workdir is not None:
            self.state.phase = "while saving the model"
            yield Progress(t=self.t(), phase="save", done=0, total=1, label="model")
            model_dir = str(self.save(loaded, adapter))
            yield Progress(t=self.t(), phase="save", done=1, total=1, label="model")
        if self.checkpoint_dir is not None and not config.keep_checkpoints:
            checkpoint.remove(self.checkpoint_dir)
        zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
        total = sum(m.weight.numel() for m in linears.values())
        yield Finished(
            t=self.t(),
            seconds=self.t(),
            weight_sparsity=zeros / max(total, 1),
            act_sparsity=self.state_act_sparsity(),
            peak_memory_mb=system.peak_memory_mb(self.device),
            model_dir=model_dir,
            timings={k: round(v, 3) for k, v in self.state.timings.items()},
        )

    def fresh(
        self,
        loaded: Any,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        windows: torch.Tensor | None,
        protocol: dict[str, Any],
        calib_name: str,
    ) -> Iterator[Event]:
        """A new run: announce it, measure the dense model, prune every block."""
        config = self.config
        model = loaded.model
        blocks = adapter.blocks(model)
        linears = adapter.all_linears(model)
        yield RunStarted(
            t=self.t(),
            config=config.to_dict(),
            model=loaded.name,
            family=adapter.family,
            device=str(self.device),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            n_blocks=len(blocks),
            n_layers=len(linears),
            n_params=sum(p.numel() for p in model.parameters()),
            n_prunable_params=sum(m.weight.numel() for m in linears.values()),
            versions=system.versions(),
            calib={
                "text": calib_name,
                "nsamples": int(calib.shape[0]),
                "seqlen": int(calib.shape[1]),
                "tokens": int(calib.numel()),
                "seed": config.seed,
                "eval": protocol,
            },
            host=system.host(self.device),
        )
        if windows is not None and config.eval_dense:
            yield from self.evaluate(model, adapter, windows, protocol, "dense", sparse=False)
            if config.act_sparsity > 0 and config.act_rule == "topk" and config.method != "dense":
                yield from self.evaluate(model, adapter, windows, protocol, "dense_act")
        if config.method != "dense" or config.act_rule == "threshold":
            yield from self.prune(model, adapter, calib, windows, protocol)

    def resumed(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        windows: torch.Tensor | None,
        protocol: dict[str, Any],
    ) -> Iterator[Event]:
        """Continue a run from its checkpoint: restore the pruned blocks and the two streams."""
        assert self.checkpoint_dir is not None
        saved = checkpoint.load(self.checkpoint_dir, adapter.blocks(model), adapter.layer_names)
        self.start -= saved.elapsed
        self.state.thresholds.update(saved.thresholds)
        for part, seconds in saved.timings.items():
            self.state.timings[part] = self.state.timings.get(part, 0.0) + seconds
        yield Note(
            t=self.t(),
            text=f"resumed from the checkpoint after block {saved.block}",
        )
        yield from self.prune(model, adapter, calib, windows, protocol, saved)

    def state_act_sparsity(self) -> float:
        """Measured activation sparsity of the final evaluation, else of the calibration."""
        if self.state.eval_act is not None:
            return self.state.eval_act
        if self.state.layer_act:
            return sum(self.state.layer_act) / len(self.state.layer_act)
        return 0.0

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        windows: torch.Tensor,
        protocol: dict[str, Any],
        label: str,
        *,
        sparse: bool = True,
        upto_block: int | None = None,
    ) -> Iterator[Event]:
        """Perplexity of the model now; with the run's activation sparsity if ``sparse``."""
        from solver.run.perplexity import EvalCancelled, perplexity

        tick = time.monotonic()
        self.state.phase = {
            "dense": "during the dense evaluation",
            "dense_act": "during the dense evaluation with activation sparsity",
            "pruned": "during the evaluation of the pruned model",
        }.get(label, f"during the {label} evaluation after block {upto_block}")
        linears = adapter.all_linears(model)
        if upto_block is not None:
            prefixes = tuple(f"model.layers.{i}." for i in range(upto_block + 1))
            linears = {k: v for k, v in linears.items() if k.startswith(prefixes)}
        p_x = self.config.act_sparsity if sparse else 0.0
        sparsifier = ActivationSparsifier(p_x, self.config.act_rule, dict(self.state.thresholds))
        total = int(windows.shape[0])
        progress: list[Event] = []

        def on_progress(done: int, total: int) -> None:
            progress.append(Progress(t=self.t(), phase="eval", done=done, total=total, label=label))

        yield Progress(t=self.t(), phase="eval", done=0, total=total, label=label)
        model.to(self.device)
        try:
            with sparsifier.attach(linears if p_x > 0 else {}):
                ppl = perplexity(
                    model,
                    windows,
                    device=self.device,
                    batch_size=self.config.batch_size,
                    cancel=self.cancel,
                    progress=on_progress,
                )
            measured = sparsifier.mean_measured() if p_x > 0 else 0.0
        except EvalCancelled as err:
            raise _CancelRequested from err
        finally:
            model.to("cpu")
        if label == "pruned":
            self.state.eval_act = float(measured)
        yield from progress[-1:]
        seconds = time.monotonic() - tick
        self.state.timings["eval"] += seconds
        yield PerplexityMeasured(
            t=self.t(),
            label=label,
            ppl=float(ppl),
            text=str(protocol.get("text", "")),
            windows=total,
            seqlen=int(windows.shape[1]),
            act_sparsity=float(measured),
            block=-1 if upto_block is None else upto_block,
            seconds=round(seconds, 3),
        )

    # ------------------------------------------------------------------ pruning
    def prune(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        windows: torch.Tensor | None,
        protocol: dict[str, Any],
        saved: checkpoint.Checkpoint | None = None,
    ) -> Iterator[Event]:
        """Walk the decoder blocks with the two streams and prune each block's layers.

        With ``saved``, the streams come from the checkpoint and pruning starts after its block.
        """
        config = self.config
        blocks = adapter.blocks(model)
        batches = list(torch.split(calib, config.batch_size))
        tick = time.monotonic()
        self.state.phase = "while capturing the calibration inputs"
        hidden, extras = capture_block_inputs(model, blocks[0], batches)
        if saved is None:
            first = 0
            dense = [h.to(self.device) for h in hidden]
            compressed = [h.clone() for h in dense]
        else:
            first = saved.block + 1
            dense = [h.to(self.device) for h in saved.dense]
            compressed = [h.to(self.device) for h in saved.compressed]
        extras = [move_kwargs(kw, self.device) for kw in extras]
        self.state.timings["forward"] += time.monotonic() - tick
        hidden_size = int(dense[0].shape[-1])
        cache_mb = self.cache_megabytes(adapter, blocks[0], calib.numel())
        widest = max(m.in_features for m in adapter.linears(blocks[0]).values())
        self.state.need = estimate.block_memory(
            int(calib.shape[0]), int(calib.shape[1]), config.batch_size, hidden_size, widest
        )
        yield Note(
            t=self.t(),
            text=(
                f"calibration: {calib.shape[0]} x {calib.shape[1]} tokens; two streams of "
                f"{2 * calib.numel() * hidden_size * 4 / 2**20:.1f} MB, cached dense layer inputs "
                f"{cache_mb:.1f} MB per block"
            ),
        )
        thin = self.thin_calibration(adapter, blocks[0], calib)
        if thin:
            yield Note(t=self.t(), level="warning", text=thin)
        for index, block in enumerate(blocks):
            if index < first:
                continue
            self.check_cancel()
            self.state.block = index
            self.state.phase = "while pruning"
            yield from self.prune_block(
                index, len(blocks), block, adapter, dense, compressed, extras
            )
            if self.checkpoint_dir is not None:
                checkpoint.save_block(
                    self.checkpoint_dir,
                    index,
                    adapter.linears(block),
                    dense,
                    compressed,
                    self.state.thresholds,
                    self.state.timings,
                    elapsed=time.monotonic() - self.start,
                )
            every = config.proxy_every
            if (
                windows is not None
                and every
                and (index + 1) % every == 0
                and index + 1 < len(blocks)
            ):
                proxy = windows[: config.proxy_windows]
                yield from self.evaluate(model, adapter, proxy, protocol, "proxy", upto_block=index)

    def thin_calibration(self, adapter: ModelAdapter, block: nn.Module, calib: torch.Tensor) -> str:
        """The thin-calibration warning for the widest layer (issue 9), or ``""``."""
        if self.config.method not in ("duogpt", "sparsegpt"):
            return ""
        name, layer = max(adapter.linears(block).items(), key=lambda item: item[1].in_features)
        return estimate.thin_calibration(
            int(calib.numel()), int(calib.shape[1]), name, int(layer.in_features)
        )

    def cache_megabytes(self, adapter: ModelAdapter, block: nn.Module, tokens: int) -> float:
        """Memory for one block's cached dense inputs (one tensor per group)."""
        linears = adapter.linears(block)
        features = sum(linears[group[0]].in_features for group in adapter.groups)
        return tokens * features * 4 / 2**20

    def prune_block(
        self,
        index: int,
        n_blocks: int,
        block: nn.Module,
        adapter: ModelAdapter,
        dense: list[torch.Tensor],
        compressed: list[torch.Tensor],
        extras: list[dict[str, Any]],
    ) -> Iterator[Event]:
        """Prune one decoder block; updates both streams in place."""
        config = self.config
        tick_block = time.monotonic()
        timings = dict.fromkeys(("forward", "statistics", "solve"), 0.0)
        yield BlockStarted(t=self.t(), block=index, n_blocks=n_blocks)
        block.to(self.device)
        linears = adapter.linears(block)
        full = {name: f"model.layers.{index}.{name}" for name in linears}
        firsts = {group[0]: linears[group[0]] for group in adapter.groups}
        sparsifier = ActivationSparsifier(
            config.act_sparsity if config.act_sparsity > 0 else 0.0,
            config.act_rule,
            {
                name: self.state.thresholds[f]
                for name, f in full.items()
                if f in self.state.thresholds
            },
        )
        sparsifier.attach(linears if config.act_sparsity > 0 else {})
        solved: list[LayerSolved] = []
        try:
            # 1. dense pass: X~ for every group, and the next dense stream
            tick = time.monotonic()
            sparsifier.enabled = False
            dense_inputs: dict[str, list[torch.Tensor]] = {}
            with torch.no_grad(), capture_inputs(firsts, dense_inputs):
                for b, states in enumerate(dense):
                    dense[b] = run_block(block, states, extras[b])
            timings["forward"] += time.monotonic() - tick
            # 2. compressed passes, group by group (true sequential) or all at once
            sparsifier.enabled = self.sparse_calibration
            group_sets = (
                [[g] for g in adapter.groups] if config.true_sequential else [list(adapter.groups)]
            )
            for groups in group_sets:
                self.check_cancel()
                tick = time.monotonic()
                raw: dict[str, list[torch.Tensor]] = {}
                heads = {g[0]: linears[g[0]] for g in groups}
                stop = groups[-1][0] if config.true_sequential else ""
                with torch.no_grad(), capture_inputs(heads, raw, stop_after=stop):
                    for b, states in enumerate(compressed):
                        run_until(block, states, extras[b])
                timings["forward"] += time.monotonic() - tick
                for group in groups:
                    for event in self.prune_group(
                        index, group, linears, full, raw[group[0]], dense_inputs[group[0]], timings
                    ):
                        solved.append(event)
                        yield event
                    sparsifier.thresholds.update(
                        {
                            n: self.state.thresholds[full[n]]
                            for n in group
                            if full[n] in self.state.thresholds
                        }
                    )
                    del raw[group[0]]
            # 3. the compressed stream moves past the pruned block
            self.check_cancel()
            tick = time.monotonic()
            with torch.no_grad():
                for b, states in enumerate(compressed):
                    compressed[b] = run_block(block, states, extras[b])
            timings["forward"] += time.monotonic() - tick
        finally:
            sparsifier.detach()
            if self.device.type != "cpu":
                block.to("cpu")
        self.state.layer_act.extend(e.act_sparsity for e in solved)
        for part, seconds in timings.items():
            self.state.timings[part] += seconds
        self.check_health(index, dense, compressed)
        zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
        total = sum(m.weight.numel() for m in linears.values())
        yield BlockFinished(
            t=self.t(),
            block=index,
            seconds=round(time.monotonic() - tick_block, 4),
            weight_sparsity=zeros / max(total, 1),
            act_sparsity=sum(e.act_sparsity for e in solved) / max(len(solved), 1),
            peak_memory_mb=system.peak_memory_mb(self.device),
            timings={k: round(v, 4) for k, v in timings.items()},
        )

    def check_weights(self, model: nn.Module, adapter: ModelAdapter) -> None:
        """Stop the run when the loaded model holds NaN/Inf weights, naming the block and layer."""
        for index, block in enumerate(adapter.blocks(model)):
            for name, param in block.named_parameters():
                if not bool(torch.isfinite(param).all()):
                    self.state.block = index
                    raise RunError(
                        f"block {index} {name.removesuffix('.weight')}: the model's weights hold "
                        "NaN/Inf before pruning; the model file is damaged: load another copy "
                        "of the model"
                    )
        for name, param in model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise RunError(
                    f"{name}: the model's weights hold NaN/Inf before pruning; the model file is "
                    "damaged: load another copy of the model"
                )

    def check_health(
        self, index: int, dense: Sequence[torch.Tensor], compressed: Sequence[torch.Tensor]
    ) -> None:
        """Stop the run when a stream holds NaN or Inf after block ``index``."""
        for name, stream in (("dense", dense), ("compressed", compressed)):
            if not all(bool(torch.isfinite(s).all()) for s in stream):
                raise RunError(
                    f"block {index}: the {name} stream holds NaN/Inf after the block; the model "
                    "overflows in its dtype — load it in float32 or lower the sparsity"
                )

    def prune_group(
        self,
        index: int,
        group: Sequence[str],
        linears: dict[str, nn.Linear],
        full: dict[str, str],
        raw: list[torch.Tensor],
        dense_inputs: list[torch.Tensor],
        timings: dict[str, float],
    ) -> Iterator[LayerSolved]:
        """Statistics for one group of layers sharing an input, then each layer's solve."""
        config = self.config
        tick = time.monotonic()
        head = full[group[0]]
        if config.act_rule == "threshold" and config.act_sparsity > 0:
            flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in raw])
            threshold = calibrate_threshold(flat, config.act_sparsity)
            del flat
            for name in group:
                self.state.thresholds[full[name]] = threshold
        in_features = linears[group[0]].in_features
        clip = config.token_clip if config.method in ("duogpt", "sparsegpt") else 0.0
        # with held-out alpha selection, every HOLDOUT_EVERY-th calibration sequence is held out
        # of the candidate solves and scores them; the final solve uses every sequence
        split = self.selects_alpha()
        fit = LayerStats.empty(in_features, device=self.device)
        held = LayerStats.empty(in_features, device=self.device) if split else None
        first_row = 0
        for x_raw, x_dense in zip(raw, dense_inputs, strict=True):
            # DuoGPT calibrates on activation-sparse inputs; the baselines on dense ones
            x_sparse = self.sparsify(x_raw, head) if self.sparse_calibration else x_raw
            # the decode cost model needs the channel activity the pruned model will run with
            x_active = None
            if not self.sparse_calibration and config.act_sparsity > 0:
                x_active = self.sparsify(x_raw, head)
            rows = torch.arange(first_row, first_row + x_raw.shape[0])
            first_row += x_raw.shape[0]
            out = rows % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 if held is not None else None
            if out is None or not bool(out.any()):
                fit.add(x_sparse, x_dense, x_active=x_active, token_clip=clip)
                continue
            for target, rows_in in ((fit, ~out), (held, out)):
                if target is not None and bool(rows_in.any()):
                    target.add(
                        _rows(x_sparse, rows_in),
                        _rows(x_dense, rows_in),
                        x_active=_rows(x_active, rows_in),
                        token_clip=clip,
                    )
        stats = fit if held is None or not held.count else fit.merged(held)
        selection = (fit, held) if held is not None and held.count and fit.count else None
        if not all(math.isfinite(float(v)) for v in (stats.H.sum(), stats.G.sum(), stats.D.sum())):
            raise RunError(
                f"block {index} {group[0]}: calibration statistics hold NaN/Inf; the model "
                "overflows in its dtype — load it in float32"
            )
        timings["statistics"] += time.monotonic() - tick
        for name in group:
            self.check_cancel()
            try:
                solved = self.solve_layer(
                    index, name, linears[name], stats, timings, selection=selection
                )
            except RunError as err:  # the math's own errors do not know the layer: name it
                if str(err).startswith(f"block {index} "):
                    raise
                raise RunError(f"block {index} {name}: {err}") from err
            yield solved

    def solve_layer(
        self,
        index: int,
        name: str,
        module: nn.Linear,
        stats: LayerStats,
        timings: dict[str, float],
        selection: tuple[LayerStats, LayerStats] | None = None,
    ) -> LayerSolved:
        """Prune one linear layer in place with the run's method.

        With ``selection`` (fit and held-out statistics), DuoGPT's alpha is chosen per layer
        (:meth:`choose_alpha`) before the final solve on ``stats``.
        """
        config = self.config
        tick = time.monotonic()
        weight = module.weight.data
        original = weight.float()
        sparsity = config.weight_sparsity
        damping, retries = config.damping, 0
        alpha, heldout = 0.0, {}
        if config.method in ("duogpt", "sparsegpt"):
            duo = config.method == "duogpt"
            alpha = config.alpha if duo else 0.0
            if duo and selection is not None and alpha > 0:
                alpha, heldout = self.choose_alpha(original, *selection)
            result = self.obc(original, stats, alpha if duo else None)
            new, damping, retries = result.weight, result.damping, result.retries
        elif config.method == "wanda":
            new = apply_mask(
                original, wanda_mask(original, torch.diagonal(stats.H), sparsity, self.nm)
            )
        elif config.method == "magnitude":
            new = apply_mask(original, magnitude_mask(original, sparsity, self.nm))
        else:  # dense
            new = original
        if not bool(torch.isfinite(new).all()):
            raise RunError(
                f"block {index} {name}: the pruned weights hold NaN/Inf; raise --damping "
                "or use more calibration samples"
            )
        seconds = time.monotonic() - tick
        timings["solve"] += seconds
        error_before, error_after = layer_errors(original, new, stats)
        weight.copy_(new.to(weight.dtype))
        counts, edges = row_density_histogram(weight)
        decode = layer_decode_costs(weight, stats.channel_activity)
        return LayerSolved(
            t=self.t(),
            block=index,
            name=name,
            layer_type=layer_type(name),
            shape=[int(weight.shape[0]), int(weight.shape[1])],
            weight_sparsity=float((weight == 0).sum()) / weight.numel(),
            act_sparsity=float(stats.act_sparsity),
            error_before=float(error_before),
            error_after=float(error_after),
            seconds=round(seconds, 4),
            histogram=counts,
            histogram_edges=edges,
            damping=float(damping),
            retries=int(retries),
            decode=decode,
            alpha=float(alpha),
            heldout={f"{a:g}": round(e, 6) for a, e in heldout.items()},
        )

    def selects_alpha(self) -> bool:
        """True when DuoGPT's alpha is chosen per layer on held-out calibration sequences."""
        config = self.config
        return (
            config.method == "duogpt"
            and config.alpha_select == "heldout"
            and config.alpha > 0
            and config.nsamples >= HOLDOUT_EVERY
        )

    def obc(self, weight: torch.Tensor, stats: LayerStats, alpha: float | None) -> SolveResult:
        """The OBS solve with the run's options; ``alpha`` None is SparseGPT (no residual)."""
        config = self.config
        return prune_obc(
            weight,
            stats.H,
            G=None if alpha is None else stats.G,
            g=None if alpha is None else stats.g,
            sparsity=config.weight_sparsity,
            nm=self.nm,
            alpha=alpha or 0.0,
            damping=config.damping,
            block_size=config.block_size,
            act_order=config.act_order,
            residual_variant=config.residual_variant,
            damping_rule=config.damping_rule,
            mask_scope=config.mask_scope,
            residual_damping=config.residual_damping,
        )

    def choose_alpha(
        self, weight: torch.Tensor, fit: LayerStats, held: LayerStats
    ) -> tuple[float, dict[float, float]]:
        """DuoGPT's alpha for one layer: each candidate of ``(0, alpha / 2, alpha)`` is solved on
        the fit sequences and scored by the layer objective on the held-out ones; the lowest
        wins (a tie keeps the smaller alpha). Returns the choice and every candidate's score."""
        scores: dict[float, float] = {}
        for candidate in alpha_candidates(self.config.alpha):
            trial = self.obc(weight, fit, candidate)
            scores[candidate] = layer_errors(weight, trial.weight, held)[1]
        best = min(scores, key=lambda a: (scores[a], a))
        return best, scores

    # ------------------------------------------------------------------ saving
    def save(self, loaded: Any, adapter: ModelAdapter) -> Path:
        """Save the pruned model, its tokenizer and the activation settings (write, then rename)."""
        assert self.workdir is not None
        target = Path(self.workdir) / "model"
        partial = Path(self.workdir) / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        from solver.io.models import quiet_transformers

        with quiet_transformers():
            loaded.model.save_pretrained(partial)
            loaded.tokenizer.save_pretrained(partial)
        settings = act_settings(
            self.config, self.state.thresholds, adapter.all_linears(loaded.model)
        )
        (partial / ACT_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
        return target


def _rows(x: torch.Tensor | None, chosen: torch.Tensor) -> torch.Tensor | None:
    """The sequences (first dimension) of a batch that ``chosen`` marks; None stays None."""
    return None if x is None else x[chosen.to(x.device)]


HOLDOUT_EVERY = 4
"""With held-out alpha selection, every 4th calibration sequence (indices 3, 7, 11...) is held
out of the candidate solves to score them."""


def alpha_candidates(alpha: float) -> tuple[float, ...]:
    """The alphas tried per layer by held-out selection: 0, half the configured one, and it."""
    return (0.0, alpha / 2, alpha)


def act_settings(
    config: RunConfig, thresholds: dict[str, float], linears: dict[str, nn.Module]
) -> dict[str, Any]:
    """What is needed to evaluate a pruned model again with its activation sparsity."""
    return {
        "sparsity": config.act_sparsity,
        "rule": config.act_rule,
        "thresholds": {k: thresholds[k] for k in sorted(thresholds)},
        "layers": sorted(linears),
        "method": config.method,
        "weight_sparsity": config.target_weight_sparsity,
        "pattern": config.pattern,
    }
