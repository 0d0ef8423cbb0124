"""Issue 11, "Show it": the model family and its discovered groups on the run and setup screens,
and plots that group any family's layers by type."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from duogpt_tui.app import DuoGPTApp
from duogpt_tui.runview import RunView
from duogpt_tui.widgets.layer_table import LayerTable
from duogpt_tui.widgets.run_plots import ErrorPlot
from screens.run import RunScreen
from screens.setup import SetupScreen
from screens.setup_fields import model_family
from solver import events as ev
from solver.config import RunConfig
from solver.run.adapters import layer_type
from tests.tui.conftest import SIZE, model_folder, wait_for, write_run
from tests.tui.fakes import LAYERS, scripted_events

pytestmark = pytest.mark.anyio

FAMILIES = {
    "gpt_neox": (
        "gpt_neox.layers",
        [
            ["attention.query_key_value"],
            ["attention.dense"],
            ["mlp.dense_h_to_4h"],
            ["mlp.dense_4h_to_h"],
        ],
    ),
    "phi3": (
        "model.layers",
        [["self_attn.qkv_proj"], ["self_attn.o_proj"], ["mlp.gate_up_proj"], ["mlp.down_proj"]],
    ),
    "gpt2": ("transformer.h", [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]),
    "opt": (
        "model.decoder.layers",
        [
            ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            ["self_attn.out_proj"],
            ["fc1"],
            ["fc2"],
        ],
    ),
    "mixtral": (
        "model.layers",
        [
            ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            ["self_attn.o_proj"],
            [f"block_sparse_moe.experts.{e}.gate_up_proj" for e in range(2)],
            [f"block_sparse_moe.experts.{e}.down_proj" for e in range(2)],
        ],
    ),
}
"""Per family: the block list and block 0's groups of layer names, as discovery reports them."""

TYPES = {
    "gpt_neox": ["o", "qkv", "fc1", "fc2"],
    "phi3": ["o", "down", "qkv", "gate_up"],
    "gpt2": ["o", "qkv", "fc1", "fc2"],
    "opt": ["q", "k", "v", "o", "fc1", "fc2"],
    "mixtral": ["q", "k", "v", "o", "experts"],
}
"""The error plot's series for each family: one per layer type, in plotting order."""


def describe(family: str, n_blocks: int) -> str:
    """The pipeline's layout note for ``family`` (``ModelAdapter.describe``)."""
    path, groups = FAMILIES[family]
    text = " -> ".join("[" + ", ".join(group) + "]" for group in groups)
    return f"{family}: {n_blocks} blocks in {path}; groups {text}"


def family_events(family: str, config: RunConfig, n_blocks: int = 2) -> Iterator[ev.Event]:
    """The scripted run, as a model of ``family``: its family in the run-started event, the
    layout note after it, and its layer names (typed as the solver types them)."""
    names = [name for group in FAMILIES[family][1] for name in group]
    for event in scripted_events(config, n_blocks=n_blocks, model=f"tiny-{family}"):
        if isinstance(event, ev.RunStarted):
            yield dataclasses.replace(event, family=family, n_layers=n_blocks * len(names))
            yield ev.Note(t=event.t, text=describe(family, n_blocks))
        elif isinstance(event, ev.LayerSolved):
            index = [name for name, _, _ in LAYERS].index(event.name)
            if index < len(names):
                name = names[index]
                yield dataclasses.replace(event, name=name, layer_type=layer_type(name))
        else:
            yield event


def test_the_view_reads_the_layout_note() -> None:
    """RunView.layout: the discovery note of the run's family; empty before it arrives."""
    events = list(family_events("phi3", RunConfig()))
    started = next(i for i, e in enumerate(events) if isinstance(e, ev.RunStarted))
    assert RunView.of(events[: started + 1]).layout == ""
    view = RunView.of(events)
    assert view.family == "phi3" and view.layout == describe("phi3", 2)
    assert RunView.of(list(scripted_events(RunConfig()))).layout == ""  # no note, no layout


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_run_screen_names_the_family_its_groups_and_types(
    family: str, make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """The header names the family; the layout line gives the groups in the family's own
    names; the error plot has one series per layer type (fused and expert layers their own)."""
    path = write_run(tmp_path, "run", RunConfig(), list(family_events(family, RunConfig())))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.open_run(path)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = app.screen
        await wait_for(pilot, lambda: any(t.row_count for t in screen.query(LayerTable)))
        await pilot.pause()
        assert f"tiny-{family} ({family})" in str(screen.sub_title)
        line = screen.query_one("#model-layout", Static)
        assert line.display
        text = str(line.content)
        path_name, groups = FAMILIES[family]
        assert text.startswith(f"{family}: 2 blocks in {path_name}; groups [")
        assert " → ".join("[" + ", ".join(group) + "]" for group in groups) in text
        plot = screen.query_one(ErrorPlot)
        assert list(plot.series) == TYPES[family]
        assert [entry.label for entry in plot.legend][: len(TYPES[family])] == TYPES[family]


async def test_run_screen_hides_the_layout_line_without_the_note(
    make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """A run whose events carry no layout note (an older run): no empty line."""
    path = write_run(tmp_path, "old", RunConfig(), n_blocks=2)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert app.open_run(path)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.pause()
        assert "scripted-llama (llama)" in str(app.screen.sub_title)
        assert not app.screen.query_one("#model-layout", Static).display


def model_dir(path: Path, model_type: str) -> Path:
    """A model folder that passes the pre-flight's cheap checks, of family ``model_type``."""
    model_folder(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config.update(model_type=model_type, architectures=[])
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def test_model_family_reads_config_json_only(tmp_path: Path) -> None:
    """The family from config.json; nothing without one, or with a broken one; a rewritten
    config.json is read again."""
    folder = model_dir(tmp_path / "m", "gpt_neox")
    assert model_family(folder) == "gpt_neox"
    (folder / "config.json").write_text('{"model_type": "phi3"}', encoding="utf-8")
    stat = (folder / "config.json").stat()
    os.utime(folder / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_family(folder) == "phi3"
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    assert model_family(folder) == ""
    assert model_family(tmp_path / "none") == ""


async def test_setup_names_a_local_models_family_and_its_known_groups(
    make_app: Callable[..., DuoGPTApp], tmp_path: Path
) -> None:
    """The model's hint names the family of a local folder; once a run of that model told its
    groups, the hint gives them too (and not for another model)."""
    folder = model_dir(tmp_path / "neox", "gpt_neox")
    other = model_dir(tmp_path / "other", "phi3")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        field = screen.query_one("#model", Input)
        field.value = str(other)
        await pilot.pause()
        hint = screen.query_one("#reason-model", Static)
        assert str(hint.content) == "local model folder · phi3"
        field.value = str(folder)
        await pilot.pause()
        assert str(hint.content) == "local model folder · gpt_neox"
        config = RunConfig(model=str(folder))
        path = write_run(tmp_path, "run", config, list(family_events("gpt_neox", config)))
        assert app.open_run(path)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.screen is screen)
        await pilot.pause()
        text = str(hint.content)
        assert text.startswith("local model folder · gpt_neox: 2 blocks in gpt_neox.layers")
        assert "groups [attention.query_key_value] → [attention.dense]" in text
        field.value = str(other)
        await pilot.pause()
        assert str(hint.content) == "local model folder · phi3"


@pytest.mark.parametrize("family", ["llama", *FAMILIES])
async def test_each_layer_type_has_its_own_colour(
    family: str, make_app: Callable[..., DuoGPTApp]
) -> None:
    """The error plot's series have pairwise distinct colours, the median the theme's
    foreground, for LLaMA names and for other families' names alike."""
    config = RunConfig()
    events = scripted_events(config, n_blocks=3)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.event_log.reset(events if family == "llama" else family_events(family, config, 3))
        app.log_changed.publish(None)
        await pilot.press("f3")
        await pilot.pause(0.3)
        plot = app.screen.query_one(ErrorPlot)
        colors = [entry.color for entry in plot.legend]
        assert [entry.label for entry in plot.legend][-1] == "median"
        assert len(set(colors)) == len(colors), plot.legend
        assert colors[-1] == plot.series_palette()[-1]
