"""The one set of formatters, the one event renderer, and the one ETA of the CLI and the TUI."""

from __future__ import annotations

import io
import math

from rich.console import Console

from duogpt_tui import formatting as fmt
from duogpt_tui.eventlog import EventLog
from duogpt_tui.eventtext import activity, event_line
from duogpt_tui.progress import RunDisplay
from duogpt_tui.runview import RunView
from solver import events as ev
from tests.report import scripted


def test_formatters_at_their_edges() -> None:
    assert fmt.percent(0.5) == "50.0%" and fmt.percent(None) == "-"
    assert fmt.percent(math.nan, "n/a") == "n/a"
    assert fmt.number(1850.754) == "1850.75" and fmt.number(math.inf) == "inf"
    assert fmt.perplexity(None, "n/a") == "n/a" and fmt.number(5.0, 1) == "5.0"
    assert fmt.seconds(12.34) == "12.3 s"
    assert [fmt.duration(v) for v in (None, 5, 42.4, 75, 3 * 3600 + 120)] == [
        "?",
        "5.0s",
        "42s",
        "1m15s",
        "3h02m",
    ]
    assert [fmt.rough_duration(v) for v in (45, 720, 9000)] == ["45 s", "12 min", "2.5 h"]
    assert fmt.eta(None) == "" and fmt.eta(75) == "ETA 1m15s"
    assert fmt.megabytes(0) == "-" and fmt.megabytes(321.6) == "322 MB"
    assert fmt.scientific(1.5e-3) == "1.500e-03" and fmt.general(0.125) == "0.125"
    assert [fmt.count(v) for v in (12, 12_345, 134_515_008)] == ["12", "12.3k", "134.5M"]


def test_one_line_per_event() -> None:
    texts = {event.kind: event_line(event).text for event in scripted.every_event_type()}
    assert texts["finished"].startswith("finished in ")
    line = event_line(ev.PerplexityMeasured(label="pruned", ppl=60.0, text="t", windows=2))
    assert line.short == "perplexity (pruned): 60.00"
    assert line.text == "perplexity (pruned): 60.00 [t, 2x0 tokens, X 0.0%]"
    assert event_line(ev.Cancelled(block=-1, reason="r")).text == "cancelled before pruning: r"
    assert event_line(ev.Note(level="warning", text="w")).tone == "warning"
    assert event_line(ev.Failed(error="boom")).text == "failed: boom"
    tasks = ev.TasksMeasured(
        label="pruned", tasks={"spam_ham": {"acc": 0.5}, "last_word": {"acc": 0.25}}, seconds=75
    )
    assert event_line(tasks).text == (
        "zero-shot accuracy (pruned): last_word 25.0%, spam_ham 50.0% [X 0.0%, 1m15s]"
    )
    assert all(texts[kind] != kind for kind in ("tasks", "layer_solved", "block_finished"))


def test_the_cli_and_the_tui_show_the_same_eta_and_activity() -> None:
    """The CLI's display and the TUI's log are the same fold: same ETA, same activity line."""
    events = scripted.finished_run()
    log = EventLog()
    display = RunDisplay(Console(file=io.StringIO()))
    for count, event in enumerate(events, start=1):
        log.append(event)
        display.show(event)
        view = RunView.of(events[:count])
        assert log.eta_seconds() == display.view.eta_seconds() == view.eta_seconds()
        assert log.activity() == activity(display.view) == activity(view)
    assert isinstance(log, RunView) and log.status == "finished"
