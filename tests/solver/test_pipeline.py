"""The layer-by-layer driver on ``tiny-random``: events contract, structure, cancel, failures."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from transformers import AutoModelForCausalLM

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.errors import InputError
from solver.events import (
    BlockFinished,
    BlockStarted,
    Event,
    Finished,
    LayerSolved,
    PerplexityMeasured,
    Progress,
    RunStarted,
    RunTotals,
    from_json,
    is_terminal,
    to_json,
)
from solver.run.evaluate import evaluate
from solver.run.pipeline import preflight, run
from solver.run.stop import RunStopped

E = TypeVar("E", bound=Event)

TINY = RunConfig(
    model="tiny-random",
    calib="sotu",
    eval="moby-dick",
    nsamples=4,
    seqlen=32,
    eval_windows=2,
    batch_size=2,
)


def collect(config: RunConfig, **kwargs: object) -> list[Event]:
    """All events of one run, ended by the runner (:class:`Finished` last)."""
    return list(stream(config, **kwargs))  # type: ignore[arg-type]


def raw(config: RunConfig, *args: object, **kwargs: object) -> tuple[list[Event], RunTotals]:
    """The pipeline's own contract: the events it yields (no terminal one) and the totals it
    returns."""
    events: list[Event] = []
    generator = run(config, *args, **kwargs)  # type: ignore[arg-type]
    while True:
        try:
            events.append(next(generator))
        except StopIteration as stop:
            totals = stop.value
            break
    assert not any(is_terminal(e) for e in events), "the runner makes the terminal event"
    assert isinstance(totals, RunTotals), totals
    return events, totals


def stopped(config: RunConfig, *args: object, **kwargs: object) -> tuple[list[Event], RunStopped]:
    """The events of a run that ends early, and the :class:`RunStopped` it raises."""
    events: list[Event] = []
    with pytest.raises(RunStopped) as info:
        for event in run(config, *args, **kwargs):  # type: ignore[arg-type]
            events.append(event)
    assert not any(is_terminal(e) for e in events), "an early end yields no terminal event"
    return events, info.value


def input_error(config: RunConfig, *args: object, **kwargs: object) -> str:
    """The one line of the input error that stops a run while it loads."""
    _, stop = stopped(config, *args, **kwargs)
    assert isinstance(stop.__cause__, InputError), stop.__cause__
    return str(stop.__cause__)


def of(events: list[Event], cls: type[E]) -> list[E]:
    """The events of one type."""
    return [e for e in events if isinstance(e, cls)]


@pytest.fixture(scope="module")
def duogpt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Event], Path]:
    """One DuoGPT run on tiny-random that saves its model."""
    workdir = tmp_path_factory.mktemp("run")
    return collect(TINY, workdir=workdir), workdir


def test_events_contract(duogpt_run: tuple[list[Event], Path]) -> None:
    events, _ = duogpt_run
    assert sum(is_terminal(e) for e in events) == 1
    assert isinstance(events[-1], Finished)
    assert events[-1].t == events[-1].seconds > 0
    started = of(events, RunStarted)
    assert len(started) == 1
    n_blocks, n_layers = started[0].n_blocks, started[0].n_layers
    assert n_blocks == 2 and n_layers == 14
    assert [e.block for e in of(events, BlockStarted)] == list(range(n_blocks))
    assert [e.block for e in of(events, BlockFinished)] == list(range(n_blocks))
    solved = of(events, LayerSolved)
    assert len(solved) == n_layers
    assert {e.layer_type for e in solved} == {"q", "k", "v", "o", "gate", "up", "down"}
    times = [e.t for e in events]
    assert times == sorted(times)
    labels = [e.label for e in of(events, PerplexityMeasured)]
    assert labels == ["dense", "dense_act", "pruned"]
    for event in events:  # every event survives the JSONL round trip
        assert from_json(to_json(event)) == event


def test_achieved_weight_and_activation_sparsity(duogpt_run: tuple[list[Event], Path]) -> None:
    events, _ = duogpt_run
    for layer in of(events, LayerSolved):
        assert layer.weight_sparsity == pytest.approx(0.5, abs=1e-9)
        # top-k on d inputs zeroes floor(d/2): exactly half for the tiny widths (64, 128)
        assert layer.act_sparsity == pytest.approx(0.5, abs=1e-3)
        assert layer.error_after >= 0 and layer.error_before >= 0
        assert sum(layer.histogram) == layer.shape[0]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.weight_sparsity == pytest.approx(0.5, abs=1e-9)
    assert finished.act_sparsity == pytest.approx(0.5, abs=1e-3)


def test_saved_model_reproduces_the_run_perplexity(duogpt_run: tuple[list[Event], Path]) -> None:
    events, workdir = duogpt_run
    model_dir = workdir / "model"
    settings = json.loads((model_dir / "activation_sparsity.json").read_text())
    assert settings["sparsity"] == 0.5 and settings["rule"] == "topk"
    pruned = next(e for e in of(events, PerplexityMeasured) if e.label == "pruned")
    result = evaluate(str(workdir), eval_text="moby-dick", windows=2, seqlen=32, device="cpu")
    assert result["ppl"] == pytest.approx(pruned.ppl, rel=1e-4)
    assert result["act_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_nm_pattern_gives_exactly_n_zeros_per_group(tmp_path: Path) -> None:
    events = collect(TINY.replace(pattern="2:4", eval_windows=0), workdir=tmp_path)
    assert isinstance(events[-1], Finished)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    checked = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            zeros = (module.weight.reshape(module.weight.shape[0], -1, 4) == 0).sum(-1)
            assert bool((zeros == 2).all()), name
            checked += 1
    assert checked == 14


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
def test_baselines_reach_the_target_sparsity(method: str) -> None:
    events = collect(TINY.replace(method=method, weight_sparsity=0.6, eval_windows=0))
    assert isinstance(events[-1], Finished), events[-1]
    for layer in of(events, LayerSolved):
        assert layer.weight_sparsity == pytest.approx(0.6, abs=0.02)


def test_dense_method_keeps_weights_and_matches_dense_act() -> None:
    events = collect(TINY.replace(method="dense"))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.weight_sparsity < 0.01
    ppl = {e.label: e.ppl for e in of(events, PerplexityMeasured)}
    assert ppl["pruned"] != ppl["dense"]  # activation sparsity changes the figure


def test_threshold_rule_saves_and_reuses_thresholds(tmp_path: Path) -> None:
    events = collect(TINY.replace(act_rule="threshold"), workdir=tmp_path)
    assert isinstance(events[-1], Finished)
    settings = json.loads((tmp_path / "model" / "activation_sparsity.json").read_text())
    assert len(settings["thresholds"]) == 14
    assert all(t > 0 for t in settings["thresholds"].values())
    pruned = next(e for e in of(events, PerplexityMeasured) if e.label == "pruned")
    assert 0.3 < pruned.act_sparsity < 0.7  # calibrated, not exact, on unseen text
    result = evaluate(str(tmp_path), windows=2, seqlen=32, device="cpu")
    assert result["ppl"] == pytest.approx(pruned.ppl, rel=1e-4)


def test_cancel_stops_within_one_block() -> None:
    cancel = threading.Event()
    events: list[Event] = []
    with pytest.raises(RunStopped) as info:
        for event in run(TINY.replace(eval_windows=0), cancel):
            events.append(event)
            if isinstance(event, LayerSolved) and event.block == 0:
                cancel.set()
    assert info.value.cancelled and (info.value.block, info.value.phase) == (0, "while pruning")
    assert not any(isinstance(e, BlockStarted) and e.block == 1 for e in events)
    assert len(of(events, LayerSolved)) == 1  # checked between layers


def test_proxy_perplexity_every_block() -> None:
    events = collect(TINY.replace(proxy_every=1, proxy_windows=1))
    proxies = [e for e in of(events, PerplexityMeasured) if e.label == "proxy"]
    assert [p.block for p in proxies] == [0]  # not after the last block: the final eval covers it
    assert proxies[0].windows == 1


def test_bad_model_becomes_an_input_failure(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    error = input_error(TINY.replace(model=str(tmp_path / "not-a-model")))
    assert "\n" not in error


def test_seqlen_beyond_context_is_refused() -> None:
    assert "--seqlen" in input_error(TINY.replace(seqlen=4096))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model": "./nope"}, "not found"),
        ({"calib": "/no/such.txt"}, "--calib"),
        ({"weight_sparsity": 1.5}, "--weight-sparsity"),
        ({"pattern": "4:2"}, "pattern"),
    ],
)
def test_preflight_refuses_bad_input(changes: dict[str, Any], needle: str) -> None:
    from solver.errors import InputError

    with pytest.raises(InputError, match=needle):
        preflight(TINY.replace(**changes))


def test_preflight_refuses_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from solver.errors import InputError
    from solver.io import system

    monkeypatch.setattr(system, "cuda_available", lambda: False)
    with pytest.raises(InputError, match="CUDA is not available"):
        preflight(TINY.replace(device="cuda"))


def test_resume_after_cancel_gives_the_uninterrupted_result(
    duogpt_run: tuple[list[Event], Path], tmp_path: Path
) -> None:
    events, _ = duogpt_run
    uninterrupted = next(e for e in of(events, PerplexityMeasured) if e.label == "pruned")
    cancel = threading.Event()
    with pytest.raises(RunStopped) as info:
        for event in run(TINY, cancel, tmp_path):
            if isinstance(event, BlockFinished) and event.block == 0:
                cancel.set()
    assert info.value.cancelled
    assert (tmp_path / "checkpoints" / "state.json").is_file()
    assert not (tmp_path / "model").exists()
    second, totals = raw(TINY, None, tmp_path, resume=True)
    assert totals.weight_sparsity == pytest.approx(0.5, abs=1e-9)
    assert totals.model_dir == str(tmp_path / "model")
    assert [e.block for e in of(second, BlockStarted)] == [1]  # block 0 was not redone
    assert not of(second, RunStarted)
    resumed = next(e for e in of(second, PerplexityMeasured) if e.label == "pruned")
    assert resumed.ppl == pytest.approx(uninterrupted.ppl, rel=1e-6)
    assert not (tmp_path / "checkpoints").exists()  # removed once finished


def test_keep_checkpoints_and_resume_without_checkpoint(tmp_path: Path) -> None:
    _, totals = raw(TINY.replace(eval_windows=0, keep_checkpoints=True), workdir=tmp_path)
    assert totals.seconds > 0 and totals.timings["solve"] > 0
    assert (tmp_path / "checkpoints" / "block-0001.pt").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint" in input_error(TINY, None, empty, resume=True)


def test_eval_dense_off_measures_only_the_pruned_model() -> None:
    events = collect(TINY.replace(eval_dense=False))
    assert isinstance(events[-1], Finished)
    assert [e.label for e in of(events, PerplexityMeasured)] == ["pruned"]


# -- issue 9: held-out alpha, thin calibration, dead channels ------------------------------------


def test_heldout_alpha_selection_records_the_choice_per_layer() -> None:
    config = TINY.replace(nsamples=8, alpha_select="heldout", save_model=False, checkpoints=False)
    events = collect(config)
    assert isinstance(events[-1], Finished), events[-1]
    solved = of(events, LayerSolved)
    assert len(solved) == 14
    for layer in solved:
        assert set(layer.heldout) == {"0", "0.0625", "0.125"}
        best = min(layer.heldout, key=lambda a: (layer.heldout[a], float(a)))
        assert layer.alpha == float(best)
    # a fixed alpha records that alpha and no held-out scores
    fixed = of(collect(config.replace(alpha_select="fixed")), LayerSolved)
    assert {layer.alpha for layer in fixed} == {0.125} and not any(e.heldout for e in fixed)
    # and SparseGPT uses none
    sparse = of(collect(config.replace(method="sparsegpt")), LayerSolved)
    assert {layer.alpha for layer in sparse} == {0.0}


def test_thin_calibration_is_warned_about_and_recorded() -> None:
    from solver.events import Note

    events = collect(TINY.replace(save_model=False, checkpoints=False))
    warnings = [e.text for e in of(events, Note) if e.level == "warning"]
    # tiny-random's widest layer is down_proj with 128 inputs; 4 x 32 = 128 tokens < 256
    assert any(
        "thin calibration: 128 tokens" in text
        and "128 inputs of mlp.down_proj" in text
        and "--nsamples 8 or more at --seqlen 32" in text
        for text in warnings
    ), warnings
    enough = collect(TINY.replace(nsamples=8, save_model=False, checkpoints=False))
    assert not any("thin calibration" in e.text for e in of(enough, Note))


def test_dead_channels_do_not_push_weight_sparsity_past_the_target() -> None:
    # at X99.9% almost every input channel is never active during calibration
    events = collect(TINY.replace(act_sparsity=0.999, save_model=False, checkpoints=False))
    assert isinstance(events[-1], Finished), events[-1]
    assert events[-1].weight_sparsity == pytest.approx(0.5, abs=1e-3)
    assert all(e.weight_sparsity == pytest.approx(0.5, abs=1e-3) for e in of(events, LayerSolved))


def test_the_final_evaluation_reports_each_batch_as_it_goes() -> None:
    """The pruned model's evaluation yields one progress event per batch before its result."""
    events = collect(TINY.replace(method="magnitude", eval_windows=3, batch_size=1))
    result = next(
        i for i, e in enumerate(events) if isinstance(e, PerplexityMeasured) and e.label == "pruned"
    )
    steps = [
        e.done
        for e in events[:result]
        if isinstance(e, Progress) and e.phase == "eval" and e.label == "pruned"
    ]
    assert steps == [0, 1, 2, 3]
