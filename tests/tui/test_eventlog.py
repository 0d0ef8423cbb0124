"""The event log's derived views and the pre-flight lines (no Textual App needed)."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from duogpt_tui.cli import preflight_estimate
from duogpt_tui.eventlog import EventLog, format_seconds
from duogpt_tui.widgets.plot_base import decade_ticks
from duogpt_tui.widgets.preflight import estimate_lines
from solver.config import RunConfig
from solver.events import Cancelled, LayerSolved, Progress
from solver.io import system
from tests.tui.fakes import scripted_events


def test_log_views_follow_a_scripted_run() -> None:
    """Layers, blocks, perplexities and the end are all derived from the events."""
    log = EventLog()
    log.extend(scripted_events(RunConfig(proxy_every=2), n_blocks=4))
    assert log.status == "finished"
    assert len(log.layers) == 28 and log.n_layers == 28
    series = log.errors_by_type()
    assert list(series) == ["q", "k", "v", "o", "gate", "up", "down"]
    assert sum(len(xs) for xs, _ in series.values()) == 28
    assert series["q"][0] == [0, 7, 14, 21]
    blocks, weight, act = log.block_sparsity()
    assert blocks == [0, 1, 2, 3] and weight == [0.5] * 4
    assert act == [0.47] * 4
    assert log.perplexity_refs() == {"dense": 40.0, "dense_act": 52.0, "pruned": 60.0}
    assert log.proxy_points() == ([1, 3], [72.0, 92.0])
    title, centres, counts = log.latest_histogram()
    assert title == "block 3 mlp.down_proj" and len(centres) == len(counts) == 8
    assert log.eta_seconds() is None
    assert log.activity().startswith("finished")


def test_progress_is_kept_only_as_the_latest() -> None:
    """Progress events do not pile up in the log."""
    log = EventLog()
    for done in range(100):
        log.append(Progress(t=done, phase="calibrate", done=done, total=100))
    assert log.events == [] and log.progress is not None and log.progress.done == 99
    assert log.status == "running"
    assert log.activity() == "calibrate 99/100"


def test_eta_from_event_times() -> None:
    """ETA = mean time per solved layer x layers left."""
    log = EventLog()
    events = list(scripted_events(n_blocks=4))
    first_layers = [e for e in events if isinstance(e, LayerSolved)][:7]
    upto = events.index(first_layers[-1]) + 1
    log.extend(events[:upto])
    eta = log.eta_seconds()
    assert eta is not None and math.isclose(eta, 21 * 0.25)


def test_reset_bumps_the_generation_and_errors_are_clamped() -> None:
    """A reset empties the log; a zero error is drawable on a log scale."""
    log = EventLog()
    log.append(LayerSolved(block=0, name="mlp.up_proj", layer_type="up", error_after=0.0))
    assert log.errors_by_type()["up"][1] == [1e-12]
    generation = log.generation
    log.reset([Cancelled(t=1.0, block=0)])
    assert log.generation == generation + 1 and log.layers == []
    assert log.status == "cancelled" and "cancelled in block 0" in log.activity()


def test_format_seconds_and_decade_ticks() -> None:
    """Small helpers behave at their edges."""
    assert format_seconds(None) == "?"
    assert format_seconds(5) == "5.0s" and format_seconds(75) == "1m15s"
    assert format_seconds(3 * 3600 + 120) == "3h02m"
    assert decade_ticks([-3.2, -1.1]) == (
        [-4.0, -3.0, -2.0, -1.0],
        ["1e-4", "1e-3", "1e-2", "1e-1"],
    )
    assert decade_ticks([]) == ([], [])


@pytest.mark.parametrize(
    ("config", "available"),
    [
        (RunConfig(model="tiny-random", nsamples=4, seqlen=32, device="cpu"), 64_000.0),
        (RunConfig(model="tiny-random", nsamples=4, seqlen=32, device="cpu"), 300.0),
        (RunConfig(device="cpu"), 64_000.0),
        (RunConfig(model="org/not-cached", device="cpu"), 64_000.0),
    ],
    ids=["tiny", "tiny-too-small", "default", "unknown-size"],
)
def test_preflight_lines_are_the_clis(
    config: RunConfig, available: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setup screen's pre-flight line and warning are what ``duogpt prune`` prints."""
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: available)
    stream = io.StringIO()
    preflight_estimate(Console(file=stream, width=1000), config)
    lines = estimate_lines(config)
    assert stream.getvalue().splitlines() == [lines.line, *lines.warning.splitlines()]
    assert lines.line.startswith(("pre-flight: about", "pre-flight: no estimate"))
    assert ("this run needs about" in lines.warning) == (available == 300.0)
    # tiny-random at 4 x 32 tokens is thin calibration for its 128-input down_proj (issue 9)
    thin = config.model == "tiny-random" and config.nsamples * config.seqlen < 256
    assert ("warning: thin calibration:" in lines.warning) == thin
