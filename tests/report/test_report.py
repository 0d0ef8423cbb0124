"""The Markdown report: golden file, determinism, how it tells each ending, JSONL round trip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from duogpt_tui.report import render_comparison, render_markdown
from duogpt_tui.runview import RunView
from solver import events as ev
from tests.report import scripted

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare text with a golden file; ``UPDATE_GOLDEN=1`` rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    assert path.is_file(), f"missing golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def test_report_matches_golden_file() -> None:
    check_golden("finished.md", render_markdown(scripted.finished_run()))


def test_comparison_matches_golden_file() -> None:
    runs = [
        ("finished", scripted.finished_run()),
        ("cancelled", scripted.cancelled_run()),
        ("failed", scripted.failed_run()),
    ]
    check_golden("comparison.md", render_comparison(runs))


def test_report_is_deterministic() -> None:
    events = scripted.finished_run()
    assert render_markdown(events) == render_markdown(list(events))


def test_dict_order_does_not_change_the_report() -> None:
    events = scripted.finished_run()
    started = events[1]
    assert isinstance(started, ev.RunStarted)
    reordered = dataclasses.replace(
        started,
        host=dict(reversed(list(started.host.items()))),
        versions=dict(reversed(list(started.versions.items()))),
        calib=dict(reversed(list(started.calib.items()))),
    )
    assert render_markdown([events[0], reordered, *events[2:]]) == render_markdown(events)


def test_report_holds_the_headline_figures() -> None:
    text = render_markdown(scripted.finished_run())
    assert "**Status: finished** in 5.0 s." in text
    assert "| dense | 1000.00 | 1.00x | 0.0% |" in text
    assert "| dense + activation sparsity | 1200.50 | 1.20x | 50.0% |" in text
    assert "| pruned (duogpt) | 1850.75 | 1.85x | 50.0% |" in text
    assert "| 50.0% | 50.0% | 50.0% | 47.0% | 5.0 s | 322 MB | 2/2 |" in text
    assert "2 non-overlapping windows x 32 tokens" in text
    assert "**warning**: block 1 self_attn.o_proj: damping raised" in text
    assert "| 1 | `self_attn.o_proj` | 64x64 |" in text  # the per-layer table
    assert "(log scale)" in text and "0.40-0.60 |####" in text  # the two plots


def test_cancelled_report_says_where_it_stopped() -> None:
    text = render_markdown(scripted.cancelled_run())
    assert "**Status: cancelled** at block 1 of 2" in text
    assert "1 block(s) were pruned" in text
    assert "| pruned" not in text


def test_failed_report_says_why() -> None:
    text = render_markdown(scripted.failed_run())
    assert "**Status: failed** at block 0 of 2 (run error): NaN in the statistics" in text
    assert "## Error detail" in text and "RunError: NaN" in text


def test_input_failure_report_uses_the_config() -> None:
    text = render_markdown(scripted.failed_run("input"), config=scripted.CONFIG.to_dict())
    assert "**Status: failed** before pruning (bad input): model path /nope" in text
    assert "- Model: `tiny-random` (the run stopped before the model was loaded)" in text
    assert "| `nsamples` | 4 |" in text


def test_report_without_a_terminal_event_is_incomplete() -> None:
    text = render_markdown(scripted.finished_run()[:12])
    assert "**Status: incomplete**" in text


def test_comparison_warns_about_different_protocols() -> None:
    other = [
        dataclasses.replace(e, windows=8) if isinstance(e, ev.PerplexityMeasured) else e
        for e in scripted.finished_run()
    ]
    text = render_comparison([("a", scripted.finished_run()), ("b", other)])
    assert "different protocols" in text


def summarize(events: list[ev.Event]) -> dict[str, Any]:
    """The headline figures of ``events`` (the JSON-ready dict of their view)."""
    return RunView.of(events).headline()


def test_headline_numbers() -> None:
    head = summarize(scripted.finished_run())
    assert head["status"] == "finished"
    assert (head["ppl_dense"], head["ppl_dense_act"], head["ppl"]) == (1000.0, 1200.5, 1850.75)
    assert (head["weight_sparsity"], head["act_sparsity"]) == (0.5, 0.47)
    assert (head["blocks_done"], head["n_blocks"], head["seconds"]) == (2, 2, 5.0)
    cancelled = summarize(scripted.cancelled_run())
    assert cancelled["status"] == "cancelled" and cancelled["stopped_block"] == 1
    assert cancelled["weight_sparsity"] == pytest.approx(0.5)
    failed = summarize(scripted.failed_run())
    assert failed["error"].startswith("NaN") and failed["category"] == "run"
    assert summarize(scripted.finished_run()[:5])["status"] == "running"


def test_the_view_grown_event_by_event_is_the_view_of_the_list() -> None:
    """One fold: adding events one at a time gives the same view as folding the list."""
    events = scripted.finished_run()
    grown = RunView()
    for event in events:
        grown.add(event)
    assert grown == RunView.of(events)
    partial = RunView.of(events[:10])  # two layers solved, 0.15 s after block 0 started
    assert partial.headline()["n_layers"] == partial.n_layers == 14
    assert partial.eta_seconds() == pytest.approx(0.15 / 2 * 12)
    assert RunView.of(events).eta_seconds() is None


@pytest.mark.parametrize("event", scripted.every_event_type(), ids=lambda e: e.kind)
def test_jsonl_round_trip(event: ev.Event) -> None:
    line = ev.to_json(event)
    assert "\n" not in line
    assert ev.from_json(line) == event


def test_report_shows_the_alpha_chosen_per_layer_and_why() -> None:
    events = scripted.finished_run()
    chosen = []
    for event in events:
        if isinstance(event, ev.LayerSolved):
            scores = {"0": 0.2, "0.0625": 0.19, "0.125": 0.25 if event.block else 0.18}
            alpha = 0.0625 if event.block else 0.125
            event = dataclasses.replace(event, heldout=scores, alpha=alpha)
        chosen.append(event)
    text = render_markdown(chosen)
    assert "## Residual scale per layer" in text
    layers = sum(isinstance(e, ev.LayerSolved) for e in chosen)
    block0 = sum(isinstance(e, ev.LayerSolved) and e.block == 0 for e in chosen)
    assert f"alpha 0.0625 in {layers - block0} layers, alpha 0.125 in {block0} layers" in text
    assert "| held-out error, alpha 0 | held-out error, alpha 0.0625 |" in text
    assert "## Residual scale per layer" not in render_markdown(scripted.finished_run())


def test_report_with_protocol_and_tasks_matches_golden_file() -> None:
    text = render_markdown(scripted.run_with_tasks())
    check_golden("with_tasks.md", text)
    assert "## Zero-shot accuracy" in text
    assert "| `spam_ham` | 60.0% ± 4.9 | 55.0% ± 5.0 | -5.0 pt |" in text
    assert "spread evenly over its 1,000 tokens" in text
    assert "text_sha256 " + "ab" * 32 in text
    assert "token offsets in the held-out text): [0, 32), [500, 532)" in text


def test_no_accuracy_section_without_tasks() -> None:
    assert "Zero-shot accuracy" not in render_markdown(scripted.finished_run())


def test_decode_costs_carry_si_units() -> None:
    from duogpt_tui.report import _si

    assert [_si(v, "B") for v in (512, 8192, 16_896, 1.5e6, 2.4e9)] == [
        "512 B",
        "8.19 kB",
        "16.9 kB",
        "1.5 MB",
        "2.4 GB",
    ]
    text = render_markdown(scripted.finished_run())
    section = text.split("## Estimated decode speedup bounds")[1].split("\n## ")[0]
    assert "**FLOPs, in kFLOP**" in section and "**Bytes moved, in kB**" in section
    assert "MFLOP" not in section and "| 8.19 (4.00x) |" in section


def test_report_shows_the_layout_discovery_found() -> None:
    """Issue 11 point 7: the report names the family, the block list and the groups."""
    layout = "llama: 2 blocks in model.layers; groups [self_attn.q_proj] -> [self_attn.o_proj]"
    events = scripted.finished_run()
    events.insert(1, ev.Note(t=0.1, text=layout))
    text = render_markdown(events)
    assert f"- Layout found by discovery: {layout}" in text
    assert "Layout found by discovery" not in render_markdown(scripted.finished_run())


def test_measured_decode_speed_section_shows_the_latest_measurement() -> None:
    assert "Measured decode speed" not in render_markdown(scripted.finished_run())
    events = [
        *scripted.finished_run(),
        scripted.speed_measured(speedup_dual=1.55),
        scripted.speed_measured(speedup_dual=2.0),
    ]
    text = render_markdown(events)
    assert text.count("## Measured decode speed") == 1
    estimated = text.index("## Estimated decode speedup bounds")
    measured = text.index("## Measured decode speed")
    following = text.index("## Proxy perplexity")
    assert estimated < measured < following  # beside the estimated bounds
    section = text[measured:following]
    assert "| dual-sparse | 200.0 | 2.00x |" in section and "155.0" not in section
    assert "| **all** | 14 | 6.0 1.00x [1.00x] |" in section
    assert "measured 2 times; this is the latest" in section
    assert "on cpu (float32), backend cpp, 1 thread(s)" in section
    assert "Same tokens as the masked dense model: yes" in section
    assert render_markdown(events) == text  # deterministic


def test_measured_decode_speed_survives_a_damaged_row() -> None:
    event = dataclasses.replace(
        scripted.speed_measured(), layers=[{"shape": "64x64"}], same_tokens=False
    )
    section = render_markdown([*scripted.finished_run(), event]).split("## Measured")[1]
    assert "| `64x64` | n/a | n/a | n/a | n/a | n/a |" in section
    assert "Same tokens as the masked dense model: **no**" in section
