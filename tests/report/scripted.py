"""Scripted event lists and fake event sources shared by the report and CLI tests.

The events are fixed (no clocks, no randomness), so a report rendered from them can be compared
with a golden file. The fake sources have the signature of ``solver.run.pipeline.run``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from solver import events as ev
from solver.config import RunConfig
from solver.math import speedup

CONFIG = RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=2)
"""The configuration the scripted runs claim to have."""

LAYERS = (
    ("self_attn.q_proj", "q", [64, 64]),
    ("self_attn.k_proj", "k", [32, 64]),
    ("self_attn.v_proj", "v", [32, 64]),
    ("self_attn.o_proj", "o", [64, 64]),
    ("mlp.gate_proj", "gate", [128, 64]),
    ("mlp.up_proj", "up", [128, 64]),
    ("mlp.down_proj", "down", [64, 128]),
)
"""The prunable layers of one block of the scripted model."""

EDGES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
"""Histogram edges of per-row weight density."""


def run_started(config: RunConfig = CONFIG, n_blocks: int = 2) -> ev.RunStarted:
    """The run-started event of the scripted runs."""
    return ev.RunStarted(
        t=0.5,
        config=config.to_dict(),
        model=config.model,
        family="llama",
        device="cpu",
        dtype="float32",
        n_blocks=n_blocks,
        n_layers=n_blocks * len(LAYERS),
        n_params=1_234_567,
        n_prunable_params=655_360,
        versions={"python": "3.11.9", "torch": "2.13.0", "transformers": "5.24.0"},
        calib={"source": "sotu", "samples": 4, "seqlen": 32, "tokens": 128},
        host={"cpus": 2, "memory_gb": 7.7, "platform": "Linux"},
    )


def block_events(block: int, t0: float) -> list[ev.Event]:
    """Block started, its seven layers (with one damping retry), block finished."""
    out: list[ev.Event] = [ev.BlockStarted(t=t0, block=block, n_blocks=2)]
    for index, (name, layer_type, shape) in enumerate(LAYERS):
        rows = shape[0]
        out.append(
            ev.Progress(
                t=t0 + 0.1 * index,
                phase="prune",
                done=index,
                total=7,
                label=f"block {block} {name}",
            )
        )
        out.append(
            ev.LayerSolved(
                t=t0 + 0.1 * index + 0.05,
                block=block,
                name=name,
                layer_type=layer_type,
                shape=list(shape),
                weight_sparsity=0.5,
                act_sparsity=0.5 - 0.01 * index,
                error_before=0.3 / (index + 1) / (block + 1),
                error_after=0.01 * (index + 1) * (block + 1),
                seconds=0.02 * (index + 1),
                histogram=[0, 1, rows - 2, 1, 0],
                histogram_edges=list(EDGES),
                damping=0.1 if (block, index) == (1, 3) else 0.01,
                retries=1 if (block, index) == (1, 3) else 0,
                decode=speedup.decode_costs([shape[0] // 2] * shape[1], shape[0], [0.5] * shape[1]),
            )
        )
    out.append(
        ev.BlockFinished(
            t=t0 + 0.8,
            block=block,
            seconds=0.8,
            weight_sparsity=0.5,
            act_sparsity=0.47,
            peak_memory_mb=321.5 + block,
            timings={"forward": 0.2, "statistics": 0.3, "solve": 0.3},
        )
    )
    return out


def ppl(label: str, value: float, t: float, act: float = 0.5) -> ev.PerplexityMeasured:
    """A perplexity event with the scripted protocol."""
    return ev.PerplexityMeasured(
        t=t, label=label, ppl=value, text="moby-dick", windows=2, seqlen=32, act_sparsity=act
    )


def finished_run() -> list[ev.Event]:
    """A complete two-block run with perplexities, a note and a finished event."""
    return [
        ev.Progress(t=0.0, phase="load", done=0, total=1, label="tiny-random"),
        run_started(),
        ppl("dense", 1000.0, 1.0, act=0.0),
        ppl("dense_act", 1200.5, 1.5),
        ev.Note(t=1.6, level="info", text="calibration: 4 samples x 32 tokens from sotu"),
        *block_events(0, 2.0),
        ev.PerplexityMeasured(
            t=2.9,
            label="proxy",
            ppl=1500.25,
            text="moby-dick",
            windows=1,
            seqlen=32,
            act_sparsity=0.5,
            block=0,
        ),
        *block_events(1, 3.0),
        ev.Note(
            t=3.4, level="warning", text="block 1 self_attn.o_proj: damping raised to 0.1 (1 retry)"
        ),
        ppl("pruned", 1850.75, 4.5),
        ev.Finished(
            t=5.0,
            seconds=5.0,
            weight_sparsity=0.5,
            act_sparsity=0.47,
            peak_memory_mb=322.5,
            model_dir="model",
            timings={"load": 0.5, "forward": 0.4, "statistics": 0.6, "solve": 0.6, "eval": 2.0},
        ),
    ]


def cancelled_run() -> list[ev.Event]:
    """A run cancelled in block 1."""
    return [
        run_started(),
        ppl("dense", 1000.0, 1.0, act=0.0),
        *block_events(0, 2.0),
        ev.BlockStarted(t=3.0, block=1, n_blocks=2),
        ev.Cancelled(t=3.1, block=1),
    ]


def failed_run(category: str = "run") -> list[ev.Event]:
    """A run that failed in block 0 (``run``) or while loading (``input``)."""
    if category == "input":
        return [
            ev.Failed(
                t=0.2,
                error="model path /nope does not exist: pass a built-in name or a model folder",
                category="input",
            )
        ]
    return [
        run_started(),
        ev.BlockStarted(t=2.0, block=0, n_blocks=2),
        ev.Failed(
            t=2.5,
            error="NaN in the statistics of block 0 self_attn.q_proj: lower --act-sparsity",
            block=0,
            category="run",
            detail="Traceback (most recent call last):\n  ...\nRunError: NaN",
        ),
    ]


def speed_result(speedup_dual: float = 1.8) -> dict[str, Any]:
    """What ``solver.kernels.speed.measure`` returns, with fixed figures (a fake measurement):
    dense 100 tok/s, act-only 150, dual ``100 * speedup_dual``; two layer-shape rows."""
    rows = []
    for shape, layers, dual_us in (("64x64", 4, 2.5), ("all", 14, 3.0)):
        row: dict[str, Any] = {"shape": shape, "layers": layers}
        for mode, us, bound in (("dense", 6.0, 1.0), ("act", 4.0, 1.6), ("weight", 4.5, 1.7)):
            row |= {f"{mode}_us": us, f"{mode}_x": 6.0 / us, f"{mode}_bound": bound}
        row |= {"dual_us": dual_us, "dual_x": 6.0 / dual_us, "dual_bound": 2.9}
        rows.append(row)
    return {
        "target": "run",
        "backend": "cpp",
        "device": "cpu",
        "dtype": "float32",
        "threads": 1,
        "act_sparsity": 0.5,
        "act_rule": "topk",
        "dense_tokens_per_s": 100.0,
        "act_tokens_per_s": 150.0,
        "dual_tokens_per_s": 100.0 * speedup_dual,
        "speedup_act": 1.5,
        "speedup_dual": speedup_dual,
        "same_tokens": True,
        "act_same_tokens": True,
        "dual_same_tokens": True,
        "tokens": 8,
        "layers": rows,
        "notes": [],
    }


def speed_measured(t: float = 4.9, speedup_dual: float = 1.8) -> ev.DecodeSpeedMeasured:
    """The event that ``duogpt speed RUN_DIR`` records for :func:`speed_result`."""
    result = speed_result(speedup_dual)
    names = {f.name for f in dataclasses.fields(ev.DecodeSpeedMeasured)}
    values = {key: value for key, value in result.items() if key in names}
    return ev.DecodeSpeedMeasured(
        t=t, date="2025-01-02T03:04:05", host={"cpus": 2, "platform": "Linux"}, **values
    )


def every_event_type() -> list[ev.Event]:
    """One event of every kind (for the JSONL round trip)."""
    events = [*run_with_tasks(), speed_measured(), *cancelled_run()[-1:], *failed_run()[-1:]]
    assert {e.kind for e in events} == set(ev.EVENT_TYPES)
    return events


def scripted_source(events: list[ev.Event], config_check: Any = None) -> Any:
    """A fake ``solver.run.pipeline.run`` yielding ``events`` (and checking the config if asked)."""

    def source(config: RunConfig, cancel: Any = None, workdir: Path | None = None) -> Iterator[Any]:
        if config_check is not None:
            config_check(config)
        yield from events

    return source


def raising_source(after: int = 2) -> Any:
    """A fake source that yields a few events, then raises an unexpected error."""

    def source(config: RunConfig, cancel: Any = None, workdir: Path | None = None) -> Iterator[Any]:
        yield from finished_run()[:after]
        raise ZeroDivisionError("boom")

    return source


def silent_source() -> Any:
    """A fake source that stops without a terminal event."""

    def source(config: RunConfig, cancel: Any = None, workdir: Path | None = None) -> Iterator[Any]:
        yield from finished_run()[:3]

    return source


def interrupting_source() -> Any:
    """A fake source that sends itself SIGINT mid-run, then honours the cancel token."""

    def source(config: RunConfig, cancel: Any = None, workdir: Path | None = None) -> Iterator[Any]:
        yield run_started(config)
        yield ev.BlockStarted(t=1.0, block=0, n_blocks=2)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            if cancel is not None and cancel.is_set():
                break
        yield ev.Cancelled(t=1.5, block=0, reason="cancelled by the user")

    return source


def waiting_source(honour_cancel: bool = True, timeout_s: float = 30.0) -> Any:
    """A fake source that starts block 0, then waits for the cancel token (or for ever).

    Args:
        honour_cancel: end with a cancelled event once the token is set; when False it keeps
            waiting, so only a second interrupt stops it.
        timeout_s: give up (with a failed event) after this long, so a broken test cannot hang.
    """

    def source(config: RunConfig, cancel: Any = None, workdir: Path | None = None) -> Iterator[Any]:
        yield run_started(config)
        yield ev.BlockStarted(t=1.0, block=0, n_blocks=2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if honour_cancel and cancel is not None and cancel.is_set():
                yield ev.Cancelled(t=1.5, block=0, reason="cancelled by the user")
                return
            time.sleep(0.01)
        yield ev.Failed(t=2.0, error="the test source timed out", block=0)

    return source


PROTOCOL: dict[str, Any] = {
    "text": "moby-dick",
    "text_sha256": "ab" * 32,
    "chars": [0, 1000],
    "text_tokens": 1000,
    "placement": "spread",
    "windows": 2,
    "seqlen": 32,
    "tokens": 64,
    "token_spans": [[0, 32], [500, 532]],
    "bos": False,
    "tokenizer": "tiny-random (TokenizersBackend, vocab 260)",
    "overlap": 0,
}
"""The evaluation protocol of :func:`run_with_tasks`."""


def run_with_tasks() -> list[ev.Event]:
    """:func:`finished_run` with the protocol on every perplexity, and zero-shot task scores of
    the dense and the pruned model (``--tasks spam_ham,next_sentence``)."""
    out: list[ev.Event] = []
    for event in finished_run():
        if isinstance(event, ev.PerplexityMeasured):
            spans = PROTOCOL["token_spans"][: event.windows]
            protocol = {**PROTOCOL, "windows": event.windows, "token_spans": spans}
            event = dataclasses.replace(event, protocol=protocol)
        if isinstance(event, ev.Finished):
            out.append(
                ev.TasksMeasured(
                    t=4.8,
                    label="pruned",
                    tasks={
                        "spam_ham": {"acc": 0.55, "acc_norm": 0.5, "acc_stderr": 0.05, "n": 100},
                        "next_sentence": {
                            "acc": 0.3,
                            "acc_norm": 0.35,
                            "acc_stderr": 0.0593,
                            "n": 60,
                        },
                    },
                    act_sparsity=0.49,
                    seconds=30.5,
                )
            )
        out.append(event)
        if isinstance(event, ev.PerplexityMeasured) and event.label == "dense_act":
            out.append(
                ev.TasksMeasured(
                    t=1.55,
                    label="dense",
                    tasks={
                        "spam_ham": {"acc": 0.6, "acc_norm": 0.52, "acc_stderr": 0.0492, "n": 100},
                        "next_sentence": {
                            "acc": 0.4,
                            "acc_norm": 0.45,
                            "acc_stderr": 0.0638,
                            "n": 60,
                        },
                    },
                    seconds=28.0,
                )
            )
    return out
