"""The event log's derived views (no Textual App needed)."""

from __future__ import annotations

import math

from duogpt_tui.eventlog import EventLog
from duogpt_tui.formatting import duration as format_seconds
from duogpt_tui.widgets.plot_base import decade_ticks
from solver.config import RunConfig
from solver.events import Cancelled, LayerSolved, Progress
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
