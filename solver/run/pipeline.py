"""The layer-by-layer pruning driver: ``run(config, cancel)`` yields events and returns totals.

ALGORITHM.md §6. The driver loads the model and the texts, announces the run, measures the dense
model, walks the decoder blocks with the two calibration streams (:mod:`solver.run.blocks`),
measures the pruned model (:mod:`solver.run.measure`), saves it (:mod:`solver.run.save`) and
returns the run's :class:`~solver.events.RunTotals`. It can also continue a run from the
checkpoint of its last complete block.

Every consumer (run store, TUI, CLI, report) sees the same events (:mod:`solver.events`), but the
driver yields no terminal event, ever: a run that gets to the end *returns* its totals, and a run
that ends early — cancelled, bad input found while loading, a numerical failure, a bug — raises
:class:`~solver.run.stop.RunStopped`, which says where the run was. The runner
(:mod:`duogpt_tui.runner`) is the one place that makes every terminal event: ``Finished`` from
the totals, ``Failed`` or ``Cancelled`` from the ending. Consumers without a run directory iterate
``duogpt_tui.runner.stream`` to get the same events, the terminal one last.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from solver.config import RunConfig
from solver.errors import InputError, RunError
from solver.events import Event, Note, Progress, RunStarted, RunTotals
from solver.io import checkpoint, system
from solver.io.run_files import CHECKPOINTS_DIR, OFFLOAD_DIR
from solver.run import blocks, distributed, estimate
from solver.run.adapters import ModelAdapter, find_adapter
from solver.run.context import RunContext
from solver.run.discovery import layer_weight
from solver.run.input_checks import INPUT_CHECKS
from solver.run.measure import evaluate, evaluate_tasks
from solver.run.offload import Placement
from solver.run.save import save_model
from solver.run.stop import NEVER, CancelToken, RunStopped

if TYPE_CHECKING:
    from solver.io.models import LoadedModel

__all__ = ["preflight", "run"]


def preflight(config: RunConfig) -> None:
    """Cheap checks before a run directory is made or anything is loaded.

    Raises:
        InputError: one actionable line (bad option, missing path, CUDA asked for and absent,
            a damaged model or text file: see :mod:`solver.io.inputs`).
    """
    config.validate()
    for check in INPUT_CHECKS:
        check.run(config)
    if config.tasks:
        from solver.run.tasks import check_tasks, parse_tasks

        check_tasks(parse_tasks(config.tasks))


def run(
    config: RunConfig,
    cancel: CancelToken | None = None,
    workdir: Path | None = None,
    resume: bool = False,
) -> Generator[Event, None, RunTotals]:
    """Prune a model as ``config`` says, yield the run's events and return its totals.

    No terminal event is yielded: the runner makes ``Finished`` from the returned totals, and
    ``Failed`` or ``Cancelled`` from the :class:`~solver.run.stop.RunStopped` raised here.

    Args:
        config: what to run.
        cancel: checked between layers and batches; ``None`` never cancels.
        workdir: the run directory; the pruned model goes to ``workdir / "model"`` when
            ``config.save_model`` is set, and per-block checkpoints to
            ``workdir / "checkpoints"`` when ``config.checkpoints`` is set. With several
            ranks only rank 0 writes there; the others may be given it to read a checkpoint.
        resume: continue from the checkpoint in ``workdir`` (after its last complete block);
            the events before it (run started, dense perplexities, finished blocks) are not
            repeated.

    Returns:
        The run's totals (time, sparsities, peak memory, where the model went).

    Raises:
        RunStopped: the run ended early; its ``__cause__`` is why: a
            :class:`~solver.run.stop.RunCancelled` (the token was set), an
            :class:`~solver.errors.InputError` (bad input found while loading), a
            :class:`~solver.errors.RunError` (the run failed: numerical trouble, out of memory,
            with one actionable line), or any other exception (a bug).
    """
    start = time.monotonic()
    system.tune_allocator()  # large temporaries go back to the OS (peak RSS, issue 4)
    context = RunContext(config, start=start)
    try:
        config.validate()
        context.device = system.resolve_device(config.device)
        context.cancel = cancel or NEVER
        context.dist, context.device = distributed.join(context.device, context.cancel)
        context.config = distributed.checked(config, context.dist)
        return (yield from _Driver(context, workdir, resume).events())
    except (torch.OutOfMemoryError, MemoryError) as err:
        cause = RunError(_out_of_memory(err, context))
        cause.__cause__ = err
        raise _stopped(cause, context) from cause
    except Exception as err:
        raise _stopped(err, context) from err


def _stopped(cause: BaseException, context: RunContext) -> RunStopped:
    """Where the run stopped because of ``cause``."""
    return RunStopped(cause, t=context.t(), block=context.block, phase=context.phase)


def _out_of_memory(err: BaseException, context: RunContext) -> str:
    """One line for an out-of-memory error: where, what it needed, what reduces it."""
    if context.need is not None and context.phase == "while pruning":
        where = f"in block {context.block}"
        need = (
            f"; pruning a block needs {context.need.describe()} on top of the model's "
            f"{estimate.megabytes(context.model_mb)}"
        )
    else:
        where = context.phase
        weights = estimate.megabytes(context.model_mb)
        need = f"; the model's weights alone take {weights}" if context.model_mb else ""
    if context.place.offloads and context.device.type != "cpu":
        need = (
            f"; with --offload {context.place.mode} it held one block, one batch and the "
            "solver's matrices"
        )
    device = context.device
    elsewhere = "--device cpu" if device.type == "cuda" else "a machine with more memory"
    if device.type == "cuda" and not context.place.offloads:
        elsewhere = f"--offload cpu, or {elsewhere}"
    return (
        f"out of memory {where} on {device} ({type(err).__name__}){need}: use fewer "
        f"--nsamples, a shorter --seqlen, a smaller --batch-size, or {elsewhere}"
    )


class _Driver:
    """One run's work, as a generator of events (see :func:`run`)."""

    def __init__(self, context: RunContext, workdir: Path | None, resume: bool = False) -> None:
        """Prepare the run; ``workdir`` is the run directory (None: nothing is written)."""
        self.context = context
        self.config = context.config
        self.workdir = workdir
        self.resume = resume
        self.calib_info: dict[str, Any] = {}
        self.checkpoint_dir: Path | None = None
        self.writes = context.dist is None or context.dist.rank == 0  # into the run directory
        if workdir is not None and (self.config.checkpoints or resume):
            self.checkpoint_dir = Path(workdir) / CHECKPOINTS_DIR
        if resume and self.checkpoint_dir is None:
            raise InputError("resuming needs the run directory that holds the checkpoint")

    def events(self) -> Generator[Event, None, RunTotals]:
        """The whole run (:meth:`work`); the ``--offload disk`` folder goes however it ends."""
        try:
            return (yield from self.work())
        finally:
            self.context.place.close()

    def work(self) -> Generator[Event, None, RunTotals]:
        """The whole run: load, prune (fresh or resumed), evaluate, save; return its totals."""
        from solver.io.data import adds_bos, calibration_batch, eval_sample, held_out_cut, load_text
        from solver.io.models import load_model

        config, context = self.config, self.context
        torch.manual_seed(config.seed)
        tick = time.monotonic()
        yield Progress(t=context.t(), phase="load", done=0, total=3, label=f"model {config.model}")
        loaded = load_model(config.model, dtype=getattr(torch, config.dtype))
        model = loaded.model
        adapter = find_adapter(model)
        context.model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        context.place = self.placement(model)
        self.check_weights(model, adapter)
        self.check_context(model)
        context.check_cancel()
        context.phase = "while loading the texts"
        yield Progress(t=context.t(), phase="load", done=1, total=3, label=f"text {config.calib}")
        calib_name, calib_text = load_text(config.calib)
        eval_name, eval_text = load_text(config.eval) if config.eval_windows > 0 else ("", "")
        cut = held_out_cut(calib_text, eval_text)  # the same text: calibration keeps [0, cut)
        calib = calibration_batch(
            loaded.tokenizer,
            calib_text[:cut] if cut is not None else calib_text,
            config.nsamples,
            config.seqlen,
            config.seed,
            name=calib_name,
        )
        self.calib_info = {
            "chars": [0, cut if cut is not None else len(calib_text)],
            "bos": adds_bos(loaded.tokenizer),
        }
        del calib_text
        context.check_cancel()
        windows = None
        protocol: dict[str, Any] = {}
        if config.eval_windows > 0:
            label = f"text {config.eval}"
            yield Progress(t=context.t(), phase="load", done=2, total=3, label=label)
            sample = eval_sample(
                loaded.tokenizer,
                eval_text,
                config.eval_windows,
                config.eval_len,
                name=eval_name,
                placement=config.eval_placement,
                chars=(cut, len(eval_text)) if cut is not None else None,
            )
            windows, protocol = sample.windows, sample.protocol
            if cut is not None:
                protocol["calib_chars"] = [0, cut]  # held out by construction
            del eval_text
            if windows.shape[0] < config.eval_windows:
                yield Note(
                    t=context.t(),
                    level="warning",
                    text=f"evaluation text {eval_name!r} holds only {windows.shape[0]} windows "
                    f"of {config.eval_len} tokens (asked for {config.eval_windows})",
                )
        context.timings["load"] += time.monotonic() - tick
        linears = adapter.all_linears(model)
        context.check_cancel()
        yield Progress(t=context.t(), phase="load", done=3, total=3, label="ready")
        if self.resume:
            yield from self.resumed(model, adapter, calib, windows, protocol)
        else:
            yield from self.fresh(loaded, adapter, calib, windows, protocol, calib_name)
        if windows is not None:
            yield from evaluate(context, model, adapter, windows, protocol, "pruned")
        yield from evaluate_tasks(context, model, adapter, loaded.tokenizer, "pruned")
        context.check_cancel()  # a cancel during the last layer or batch still ends it cancelled
        model_dir = ""
        if config.save_model and self.workdir is not None and self.writes:
            context.phase = "while saving the model"
            yield Progress(t=context.t(), phase="save", done=0, total=1, label="model")
            saved = save_model(loaded, config, context.thresholds, linears, self.workdir)
            model_dir = str(saved)
            yield Progress(t=context.t(), phase="save", done=1, total=1, label="model")
        context.check_cancel()
        if self.checkpoint_dir is not None and self.writes and not config.keep_checkpoints:
            checkpoint.remove(self.checkpoint_dir)
        return self.totals(linears, model_dir)

    def fresh(
        self,
        loaded: LoadedModel,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        windows: torch.Tensor | None,
        protocol: dict[str, Any],
        calib_name: str,
    ) -> Iterator[Event]:
        """A new run: announce it, measure the dense model, prune every block."""
        config, context = self.config, self.context
        model = loaded.model
        linears = adapter.all_linears(model)
        yield RunStarted(
            t=context.t(),
            config=config.to_dict(),
            model=loaded.name,
            family=adapter.family,
            device=str(context.device),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            n_blocks=len(adapter.blocks(model)),
            n_layers=len(linears),
            n_params=sum(p.numel() for p in model.parameters()),
            n_prunable_params=sum(layer_weight(m).numel() for m in linears.values()),
            versions=system.versions(),
            calib={
                "text": calib_name,
                "nsamples": int(calib.shape[0]),
                "seqlen": int(calib.shape[1]),
                "tokens": int(calib.numel()),
                "seed": config.seed,
                **self.calib_info,
                "eval": protocol,
            },
            host=system.host(context.device),
        )
        yield from self.layout_notes(adapter)
        self.attach(model, adapter)
        if config.offload != "none":
            yield Note(t=context.t(), text=context.place.describe())
        prunes = context.method.prunes
        if windows is not None and config.eval_dense:
            yield from evaluate(context, model, adapter, windows, protocol, "dense", sparse=False)
            if config.act_sparsity > 0 and config.act_rule == "topk" and prunes:
                yield from evaluate(context, model, adapter, windows, protocol, "dense_act")
        if config.eval_dense:
            yield from evaluate_tasks(
                context, model, adapter, loaded.tokenizer, "dense", sparse=False
            )
        if prunes or config.act_rule == "threshold":  # thresholds are calibrated block by block
            yield from blocks.prune(
                context, model, adapter, calib, windows, protocol, self.checkpoint_dir
            )

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
        context = self.context
        saved = checkpoint.load(self.checkpoint_dir, adapter.blocks(model), adapter.linears)
        context.start -= saved.elapsed
        context.thresholds.update(saved.thresholds)
        for part, seconds in saved.timings.items():
            context.timings[part] = context.timings.get(part, 0.0) + seconds
        yield Note(t=context.t(), text=f"resumed from the checkpoint after block {saved.block}")
        self.attach(model, adapter)  # after the restore: the pruned blocks' weights
        if self.config.offload != "none":
            yield Note(t=context.t(), text=context.place.describe())
        yield from blocks.prune(
            context, model, adapter, calib, windows, protocol, self.checkpoint_dir, saved
        )

    def placement(self, model: nn.Module) -> Placement:
        """Where this run keeps its weights and streams: ``--offload``, with ``auto`` resolved
        by the estimate from the loaded model's sizes and the device's free memory."""
        config, device = self.config, self.context.device
        mode, reason = config.offload, ""
        if mode == "auto":
            spec = model.config
            hidden = getattr(spec, "hidden_size", None)
            heads = getattr(spec, "num_attention_heads", None)
            kv_heads = getattr(spec, "num_key_value_heads", None) or heads
            guess = estimate.estimate(
                config,
                n_params=sum(p.numel() for p in model.parameters()),
                hidden=hidden,
                layers=getattr(spec, "num_hidden_layers", None),
                intermediate=getattr(spec, "intermediate_size", None),
                device=device.type,
                vocab=getattr(spec, "vocab_size", None),
                kv_dim=hidden * kv_heads // heads if hidden and heads and kv_heads else None,
                available_mb=system.available_memory_mb(device),
            )
            mode, reason = guess.offload or "none", guess.reason
        return Placement(mode, device, reason)

    def attach(self, model: nn.Module, adapter: ModelAdapter) -> None:
        """``--offload disk``: the blocks' weights into memory-mapped files, in the run
        directory's ``offload/`` folder (a temporary folder without one, or on a rank that
        does not write there)."""
        folder = None
        if self.workdir is not None and self.writes:
            folder = Path(self.workdir) / OFFLOAD_DIR
        self.context.place.attach(model, adapter.blocks(model), folder)

    def layout_notes(self, adapter: ModelAdapter) -> Iterator[Note]:
        """What discovery found: the family, the block list and the groups; what it left out."""
        yield Note(t=self.context.t(), text=adapter.describe())
        if adapter.skipped:
            names = ", ".join(sorted(adapter.skipped))
            yield Note(
                t=self.context.t(),
                level="warning",
                text=f"not pruned (never called by the forward pass): {names}",
            )

    def totals(self, linears: dict[str, nn.Module], model_dir: str) -> RunTotals:
        """The run's totals: its time, sparsities, peak memory and where the model went."""
        context = self.context
        zeros = sum(int((layer_weight(m) == 0).sum()) for m in linears.values())
        total = sum(layer_weight(m).numel() for m in linears.values())
        return RunTotals(
            seconds=context.t(),
            weight_sparsity=zeros / max(total, 1),
            act_sparsity=context.act_sparsity(),
            peak_memory_mb=system.peak_memory_mb(context.device),
            model_dir=model_dir,
            timings={k: round(v, 3) for k, v in context.timings.items()},
        )

    def check_weights(self, model: nn.Module, adapter: ModelAdapter) -> None:
        """Stop the run when the loaded model holds NaN/Inf weights, naming the block and layer."""
        for index, block in enumerate(adapter.blocks(model)):
            for name, param in block.named_parameters():
                if not bool(torch.isfinite(param).all()):
                    self.context.block = index
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

    def check_context(self, model: nn.Module) -> None:
        """Refuse calibration or evaluation windows longer than the model's context."""
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        for flag, length in (
            ("--seqlen", self.config.seqlen),
            ("--eval-seqlen", self.config.eval_len),
        ):
            if context and length > context:
                raise InputError(
                    f"{flag} {length} is longer than the model's context of {context} "
                    f"tokens: use {flag} {context} or less"
                )
