"""Block offload (``--offload``, issue 14): the same figures, one block on the device at a time.

On this CPU the run device is the host, so moving a block "to the device" changes nothing in
memory; the code path still runs, and every move goes through :func:`solver.run.offload.move`
(weights) and :func:`solver.run.offload.fetch` (batches). A :class:`Ledger` replaces them with
a simulated device: it counts the parameter bytes that the run's placement has moved onto the
device and the bytes of the batches fetched there that are still alive (a fetch returns a copy,
as a real device would, whose lifetime is followed), so the device-side peak can be compared
with the pre-flight estimate. The CUDA test at the end runs the real thing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from duogpt_tui.cli import app
from duogpt_tui.preflight_text import estimate_lines
from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.errors import InputError
from solver.events import (
    BlockFinished,
    BlockStarted,
    Event,
    Finished,
    Note,
    PerplexityMeasured,
    Progress,
)
from solver.io import system
from solver.io.models import LoadedModel
from solver.run import estimate, offload
from solver.run.offload import HOST, Placement
from solver.run.pipeline import preflight, run
from solver.run.stop import RunStopped

TINY = RunConfig(
    model="tiny-random",
    calib="sotu",
    eval="moby-dick",
    nsamples=4,
    seqlen=32,
    eval_windows=2,
    batch_size=2,
    device="cpu",
)

BLOCK = "LlamaDecoderLayer"
"""The class of tiny-random's decoder blocks (how the ledger recognises a block)."""


@dataclass
class Ledger:
    """A simulated device: what the run's placement moved onto it, and its peaks per phase.

    Attributes:
        phase: ``pruning`` or ``evaluation`` while the run is in one (set from its events).
        weights: parameter id -> bytes, for the parameters on the device now.
        live: bytes of the fetched batches still alive.
        blocks: the decoder blocks on the device now (by id).
        most_blocks: the most blocks ever on the device at once.
        arrivals: the blocks' arrivals on the device, by phase, in order (block ids).
        peak_weights: the most parameter bytes on the device, by phase.
        peak: the most parameter and batch bytes on the device, by phase.
        fetches: how many batches were fetched.
    """

    phase: str = ""
    weights: dict[int, int] = field(default_factory=dict)
    live: int = 0
    blocks: set[int] = field(default_factory=set)
    most_blocks: int = 0
    arrivals: dict[str, list[int]] = field(default_factory=dict)
    peak_weights: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    fetches: int = 0

    def move(
        self, module: nn.Module, device: torch.device, *, back: bool = False, recurse: bool = True
    ) -> None:
        """The spy in place of :func:`solver.run.offload.move`."""
        original_move(module, device, back=back, recurse=recurse)
        for param in module.parameters(recurse=recurse):
            if back:
                self.weights.pop(id(param), None)
            else:
                self.weights[id(param)] = param.numel() * param.element_size()
        blocks = [m for m in (module.modules() if recurse else [module]) if _is_block(m)]
        for block in blocks:
            if back:
                self.blocks.discard(id(block))
            else:
                self.blocks.add(id(block))
                self.arrivals.setdefault(self.phase, []).append(id(block))
        self.most_blocks = max(self.most_blocks, len(self.blocks))
        self.note()

    def fetch(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The spy in place of :func:`solver.run.offload.fetch`: a copy, followed until freed."""
        copy = original_fetch(tensor, device).clone()
        size = copy.numel() * copy.element_size()
        self.live += size
        self.fetches += 1
        weakref.finalize(copy, self.free, size)
        self.note()
        return copy

    def free(self, size: int) -> None:
        """A fetched batch was freed."""
        self.live -= size

    def note(self) -> None:
        """Record the peaks of the current phase."""
        weights = sum(self.weights.values())
        phase = self.phase or "outside"
        self.peak_weights[phase] = max(self.peak_weights.get(phase, 0), weights)
        self.peak[phase] = max(self.peak.get(phase, 0), weights + self.live)

    def follow(self, events: Iterator[Event]) -> Iterator[Event]:
        """Pass the run's events through, setting :attr:`phase` from them."""
        for event in events:
            if isinstance(event, BlockStarted):
                self.phase = "pruning"
            elif isinstance(event, Progress) and event.phase == "eval":
                self.phase = "evaluation"
            yield event
            if isinstance(event, BlockFinished | PerplexityMeasured):
                self.phase = ""


original_move = offload.move
original_fetch = offload.fetch


def _is_block(module: nn.Module) -> bool:
    """A decoder block of tiny-random."""
    return type(module).__name__ == BLOCK


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """A simulated device in place of the placement's moves and fetches."""
    spy = Ledger()
    monkeypatch.setattr(offload, "move", spy.move)
    monkeypatch.setattr(offload, "fetch", spy.fetch)
    return spy


def perplexities(events: list[Event]) -> dict[str, float]:
    """The measured perplexities by label."""
    return {e.label: e.ppl for e in events if isinstance(e, PerplexityMeasured)}


@pytest.fixture(scope="module")
def without_offload() -> list[Event]:
    """The tiny run with ``--offload none``."""
    events = list(stream(TINY))
    assert isinstance(events[-1], Finished), events[-1]
    return events


def _param_bytes(module: nn.Module) -> int:
    """The bytes of a module's parameters (tied ones once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_cpu_offload_gives_the_same_perplexity_one_block_at_a_time(
    without_offload: list[Event], ledger: Ledger, tiny_model: LoadedModel
) -> None:
    events = list(ledger.follow(stream(TINY.replace(offload="cpu"))))
    assert isinstance(events[-1], Finished), events[-1]
    offloaded, plain = perplexities(events), perplexities(without_offload)
    assert offloaded.keys() == plain.keys() == {"dense", "dense_act", "pruned"}
    for label, ppl in plain.items():
        assert f"{offloaded[label]:.4g}" == f"{ppl:.4g}"  # 4 significant digits
        assert offloaded[label] == pytest.approx(ppl, rel=1e-6)
    sparsity = [e.weight_sparsity for e in events if isinstance(e, BlockFinished)]
    assert sparsity == [e.weight_sparsity for e in without_offload if isinstance(e, BlockFinished)]
    # one block at a time, ever; while pruning, each block arrives once, in order
    assert ledger.most_blocks == 1
    pruned = ledger.arrivals["pruning"]
    assert len(pruned) == 2 and len(set(pruned)) == 2
    # while evaluating, each block arrives once per batch of windows (3 evaluations, 1 batch)
    assert len(ledger.arrivals["evaluation"]) == 3 * 2
    assert ledger.fetches > 0 and not ledger.weights and not ledger.blocks  # all back home
    # the device-side peaks: one block while pruning, the rest of the model too while evaluating
    model = tiny_model.model
    block = _param_bytes(model.model.layers[0])
    outside = _param_bytes(model) - 2 * block
    assert ledger.peak_weights["pruning"] == block
    assert ledger.peak_weights["evaluation"] == outside + block
    assert ledger.peak_weights.get("outside", 0) == 0  # the capture runs in host memory
    notes = [e.text for e in events if isinstance(e, Note) and e.text.startswith("offload cpu")]
    assert len(notes) == 1 and "host memory" in notes[0]


def test_the_device_side_peak_stays_within_the_estimate(
    ledger: Ledger, tiny_model: LoadedModel
) -> None:
    config = TINY.replace(offload="cpu", eval_dense=False)
    events = list(ledger.follow(stream(config)))
    assert isinstance(events[-1], Finished), events[-1]
    model = tiny_model.model
    spec = model.config
    _, cpu = estimate.offload_memory(
        config,
        n_params=sum(p.numel() for p in model.parameters()),
        hidden=spec.hidden_size,
        layers=spec.num_hidden_layers,
        intermediate=spec.intermediate_size,
        vocab=spec.vocab_size,
        kv_dim=spec.hidden_size * spec.num_key_value_heads // spec.num_attention_heads,
    )
    mb = 2**20
    # while pruning: one block's weights plus the batches brought to it (one stream's hidden
    # states, or one group's compressed and dense inputs), within the solver's workspace
    measured = ledger.peak["pruning"] / mb
    block = _param_bytes(model.model.layers[0]) / mb
    assert measured <= cpu.pruning.total  # weights + activations + solver workspace
    assert measured - block <= cpu.pruning.inputs * 1.2
    assert measured == pytest.approx(cpu.pruning.weights + cpu.pruning.inputs, rel=0.2)
    assert ledger.peak_weights["pruning"] / mb == pytest.approx(cpu.pruning.weights, rel=0.2)
    # while evaluating: the weights outside the blocks and one block
    evaluated = ledger.peak_weights["evaluation"] / mb
    assert evaluated == pytest.approx(cpu.evaluation.weights, rel=0.2)
    # the estimate's device-side figure is this accounting's, plus the fixed base
    assert cpu.device == pytest.approx(
        estimate.BASE_MEMORY_MB + max(cpu.pruning.total, cpu.evaluation.total)
    )


def test_resume_with_offload_gives_the_uninterrupted_result(
    without_offload: list[Event], tmp_path: Path
) -> None:
    config = TINY.replace(offload="cpu")
    cancel = threading.Event()
    with pytest.raises(RunStopped) as info:
        for event in run(config, cancel, tmp_path):
            if isinstance(event, BlockFinished) and event.block == 0:
                cancel.set()
    assert info.value.cancelled
    second = list(stream(config, workdir=tmp_path, resume=True))
    assert isinstance(second[-1], Finished), second[-1]
    assert perplexities(second)["pruned"] == pytest.approx(
        perplexities(without_offload)["pruned"], rel=1e-6
    )


def test_fused_experts_give_the_same_result_with_offload(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A MoE block's routed inputs stay on the device (their hooks index them); the rest moves."""
    from tests.solver.families import save_tiny, write_texts

    folder = save_tiny("mixtral", tmp_path_factory.mktemp("mixtral") / "model")
    write_texts(folder.parent)
    config = TINY.replace(
        model=str(folder),
        calib=str(folder.parent / "sotu.txt"),
        eval=str(folder.parent / "moby-dick.txt"),
        eval_windows=1,
        eval_dense=False,
    )
    results = []
    for mode in ("none", "cpu"):
        events = list(stream(config.replace(offload=mode)))
        assert isinstance(events[-1], Finished), events[-1]
        results.append((perplexities(events)["pruned"], events[-1].weight_sparsity))
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def test_evaluating_brings_every_block_home_when_a_forward_stops(ledger: Ledger) -> None:
    from solver.io.models import tiny_random_model

    model = tiny_random_model(seed=0).model
    blocks = model.model.layers
    place = Placement("cpu", torch.device("cpu"))

    def boom(_module: nn.Module, _args: object) -> None:
        raise RuntimeError("stopped inside block 1")

    handle = blocks[1].mlp.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="block 1"), place.evaluating(model, blocks):
        assert ledger.weights  # the embeddings, final norm and LM head are on the device
        model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=False)
    handle.remove()
    assert not ledger.weights and not ledger.blocks  # block 1 came back with the rest
    assert ledger.most_blocks == 1
    assert all(p.device == HOST for p in model.parameters())


def test_none_moves_nothing_but_the_blocks_and_the_model(ledger: Ledger) -> None:
    from solver.io.models import tiny_random_model

    model = tiny_random_model(seed=0).model
    place = Placement("none", torch.device("cpu"))
    batch = torch.ones(2, 3)
    assert place.fetch(batch) is batch and ledger.fetches == 0  # the streams live on the device
    with place.evaluating(model, model.model.layers):
        assert sum(ledger.weights.values()) == _param_bytes(model)  # the whole model
    assert not ledger.weights


# ------------------------------------------------------------------ options and pre-flight


def test_bad_offload_values_are_refused_in_one_line() -> None:
    runner = CliRunner()
    bogus = runner.invoke(app, ["prune", "--offload", "bogus"])
    assert bogus.exit_code == 2
    lines = [line for line in bogus.stderr.splitlines() if line.strip()]
    assert lines == ["error: unknown offload mode 'bogus': use none, cpu, disk or auto"]
    disk = runner.invoke(app, ["prune", "--offload", "disk"])
    assert disk.exit_code == 2
    lines = [line for line in disk.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--offload cpu" in lines[0], disk.stderr
    TINY.replace(offload="disk").validate()  # a value of the option, refused by the pre-flight
    with pytest.raises(
        InputError, match=r"^--offload disk .* not available yet: use --offload cpu"
    ):
        preflight(TINY.replace(offload="disk"))


def llama_7b(config: RunConfig, **kwargs: Any) -> estimate.Estimate:
    """The estimate of ``config`` for LLaMA-2-7B's sizes."""
    return estimate.estimate(config, 6_738_415_616, 4096, 32, 11008, vocab=32000, **kwargs)


def test_the_estimate_gives_each_mode_and_auto_chooses_by_the_free_memory() -> None:
    config = RunConfig(nsamples=128, seqlen=2048, dtype="bfloat16", eval_windows=40)
    auto = config.replace(offload="auto")
    roomy = llama_7b(auto, device="cuda", available_mb=140_000.0)
    assert roomy.offload == "none" and "fits in the 136.7 GB free" in roomy.reason
    small = llama_7b(auto, device="cuda", available_mb=16_000.0)
    assert small.offload == "cpu" and "exceeds the 15.6 GB free" in small.reason
    none, cpu = small.mode("none"), small.mode("cpu")
    assert small.memory_mb == pytest.approx(cpu.device, abs=0.1)
    assert cpu.device < none.device / 5  # one block instead of the model and its streams
    assert cpu.pruning.weights == pytest.approx(
        (2 * 4096**2 + 2 * 4096**2 + 3 * 4096 * 11008) * 2 / 2**20
    )
    assert cpu.host > none.pruning.weights  # the weights and the streams wait on the host
    assert small.seconds > roomy.seconds  # the copies over the bus take time
    # a fixed mode is kept; on the CPU, auto never offloads
    assert llama_7b(config.replace(offload="cpu"), device="cuda").offload == "cpu"
    on_cpu = llama_7b(auto, available_mb=1.0)
    assert on_cpu.offload == "none" and "device is the CPU" in on_cpu.reason
    # the default is unchanged: offload none, the figure it always was
    default = estimate.estimate(RunConfig())
    block = estimate.block_memory(16, 256, 8, 576, 1536)
    logits = (8 * 256 + 2 * 256) * 49152 * 4 / 2**20
    before = estimate.BASE_MEMORY_MB + 134_515_008 * 4 / 2**20 + block.total + logits
    assert default.offload == "none" and default.memory_mb == pytest.approx(before, abs=0.1)


def test_the_preflight_line_states_the_mode_and_each_modes_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 64_000.0)
    line = estimate_lines(TINY).line
    assert line.startswith("pre-flight: about ")
    assert line.endswith("; offload none (none 402 MB, cpu 402 MB)"), line
    chosen = estimate_lines(TINY.replace(offload="auto")).line
    assert "; offload none, chosen by auto: the device is the CPU" in chosen


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_offload_matches_cuda_without_offload() -> None:
    results = {}
    for mode in ("none", "cpu"):
        events = list(stream(TINY.replace(device="cuda", offload=mode)))
        assert isinstance(events[-1], Finished), events[-1]
        results[mode] = (perplexities(events), events[-1])
    (plain, _), (offloaded, finished) = results["none"], results["cpu"]
    for label, ppl in plain.items():
        assert offloaded[label] == pytest.approx(ppl, rel=1e-4)
    assert finished.peak_memory_mb > 0
