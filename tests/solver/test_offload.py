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

import json
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
from duogpt_tui.preflight_text import estimate_lines, host_warning, offload_text
from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import (
    BlockFinished,
    BlockStarted,
    Event,
    Finished,
    Note,
    PerplexityMeasured,
    Progress,
    from_json,
)
from solver.io import system
from solver.io.models import LoadedModel
from solver.io.run_files import OFFLOAD_DIR
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
    _, cpu, _ = estimate.offload_modes(
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


# ------------------------------------------------------------ disk: memory-mapped block weights

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/maps").is_file(), reason="reads the memory mappings in /proc (Linux)"
)


def backing_files(tensors: list[torch.Tensor]) -> list[str]:
    """The file each tensor's memory is mapped from (``""``: anonymous memory), read from this
    process's mappings in ``/proc/self/maps``."""
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            regions.append((start, end, parts[5].removesuffix(" (deleted)")))
    found = []
    for tensor in tensors:
        address = tensor.data_ptr()
        found.append(next((path for lo, hi, path in regions if lo <= address < hi), ""))
    return found


def block_tensors(block: nn.Module) -> list[torch.Tensor]:
    """A block's parameters and buffers."""
    return [*block.parameters(), *block.buffers()]


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[LoadedModel]:
    """The models that the runs load, in order (a spy on :func:`solver.io.models.load_model`)."""
    from solver.io import models

    seen: list[LoadedModel] = []
    original = models.load_model

    def spy(*args: Any, **kwargs: Any) -> LoadedModel:
        model = original(*args, **kwargs)
        seen.append(model)
        return model

    monkeypatch.setattr(models, "load_model", spy)
    return seen


def saved_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The pruned model that a run saved into its run directory."""
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


@needs_proc
def test_disk_offload_prunes_the_same_model_from_mapped_files(
    without_offload: list[Event], loaded: list[LoadedModel], ledger: Ledger, tmp_path: Path
) -> None:
    folder = tmp_path / "disk" / OFFLOAD_DIR
    events, seen = [], []
    for event in ledger.follow(stream(TINY.replace(offload="disk"), workdir=tmp_path / "disk")):
        events.append(event)
        if isinstance(event, BlockFinished | PerplexityMeasured):  # the run waits here
            blocks = loaded[-1].model.model.layers
            files = [backing_files(block_tensors(block)) for block in blocks]
            seen.append((event, files))
    assert isinstance(events[-1], Finished), events[-1]
    # every weight of every block is read from a file in <run>/offload/, before and after
    # its pruning, during the evaluations too; the block just pruned from a fresh file
    assert len(seen) == 2 + 3  # two blocks, three evaluations
    for event, files in seen:
        for index, paths in enumerate(files):
            names = {Path(p).name for p in paths}
            assert all(Path(p).parent == folder for p in paths), (event, paths)
            assert len(names) == 1 and names.pop().startswith(f"block-{index:04d}-"), event
    files_by_event = [{Path(p).name for p in files[0]} for _, files in seen]
    assert files_by_event[0] == {"block-0000-1.pt"}  # dense: the file written after loading
    pruned = next(i for i, (e, _) in enumerate(seen) if isinstance(e, BlockFinished))
    assert files_by_event[pruned] == {"block-0000-3.pt"}  # the pruned block 0, written anew
    assert ledger.most_blocks == 1 and not ledger.blocks  # one block at a time, as with cpu
    # ... the outside modules stay in host memory, and the folder is gone with the run
    assert backing_files([loaded[-1].model.model.embed_tokens.weight]) == [""]
    assert not folder.exists()
    # the same run as cpu (bit for bit) and none (as cpu is)
    cpu = list(stream(TINY.replace(offload="cpu"), workdir=tmp_path / "cpu"))
    assert isinstance(cpu[-1], Finished), cpu[-1]
    assert perplexities(events) == perplexities(cpu)
    for label, ppl in perplexities(without_offload).items():
        assert perplexities(events)[label] == pytest.approx(ppl, rel=1e-6)
    disk_model, cpu_model = saved_weights(tmp_path / "disk"), saved_weights(tmp_path / "cpu")
    assert disk_model.keys() == cpu_model.keys()
    assert all(torch.equal(disk_model[k], cpu_model[k]) for k in cpu_model)
    assert any(bool((w == 0).any()) for w in disk_model.values())  # it was pruned
    notes = [e.text for e in events if isinstance(e, Note) and e.text.startswith("offload disk")]
    assert len(notes) == 1 and str(folder) in notes[0] and "memory-mapped" in notes[0]


@needs_proc
def test_a_stopped_disk_run_removes_its_folder_and_resumes_mapped(
    without_offload: list[Event], loaded: list[LoadedModel], tmp_path: Path
) -> None:
    config = TINY.replace(offload="disk")
    folder = tmp_path / OFFLOAD_DIR
    cancel = threading.Event()
    with pytest.raises(RunStopped) as info:
        for event in run(config, cancel, tmp_path):
            if isinstance(event, BlockFinished) and event.block == 0:
                assert folder.is_dir()
                cancel.set()
    assert info.value.cancelled and not folder.exists()
    second: list[Event] = []
    for event in stream(config, workdir=tmp_path, resume=True):
        second.append(event)
        if isinstance(event, BlockStarted):  # block 1: block 0 came back from the checkpoint
            block = loaded[-1].model.model.layers[0]
            paths = backing_files(block_tensors(block))
            assert all(Path(p).parent == folder for p in paths), paths
    assert isinstance(second[-1], Finished), second[-1]
    assert not folder.exists()
    assert perplexities(second)["pruned"] == pytest.approx(
        perplexities(without_offload)["pruned"], rel=1e-6
    )


@needs_proc
def test_attach_maps_the_blocks_and_copies_the_outside_off_the_loaders_file(
    tmp_path: Path,
) -> None:
    from solver.io.models import tiny_random_model

    model = tiny_random_model(seed=0).model
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as SmolLM2's are
    tokens = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=tokens, use_cache=False).logits
    # as a loader that memory-maps the model file leaves a weight
    loader = tmp_path / "loader.pt"
    torch.save({"embed": model.lm_head.weight.detach()}, loader)
    model.lm_head.weight.data = torch.load(loader, mmap=True, weights_only=True)["embed"]
    assert backing_files([model.model.embed_tokens.weight]) == [str(loader)]
    place = Placement("disk", HOST)
    place.attach(model, model.model.layers, tmp_path / "offload")
    assert backing_files([model.model.embed_tokens.weight]) == [""]  # a copy of its own
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    for index, block in enumerate(model.model.layers):
        paths = set(backing_files(block_tensors(block)))
        assert len(paths) == 1 and Path(paths.pop()).name.startswith(f"block-{index:04d}-")
    with torch.no_grad(), place.evaluating(model, model.model.layers):
        assert torch.equal(model(input_ids=tokens, use_cache=False).logits, expected)
    assert place.describe().startswith(f"offload disk: the blocks' weights are memory-mapped from "
                                       f"files in {tmp_path / 'offload'}; ")  # fmt: skip
    place.close()
    assert place.files is None and not (tmp_path / "offload").exists()


class _Tied(nn.Module):
    """A block with a parameter used twice and a buffer held by two modules."""

    def __init__(self) -> None:
        """Two layers sharing a weight, one buffer in two modules."""
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.second.weight = self.first.weight
        scale = torch.full((4,), 2.0)
        self.first.register_buffer("scale", scale)
        self.inner = nn.Module()
        self.inner.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The two layers, the buffer between them."""
        hidden: torch.Tensor = self.first(x) * self.first.scale
        out: torch.Tensor = self.second(hidden)
        return out


@needs_proc
def test_block_files_keep_ties_and_write_a_pruned_block_anew(tmp_path: Path) -> None:
    from solver.run.mapped import BlockFiles

    torch.manual_seed(0)
    blocks = [_Tied(), _Tied()]
    x = torch.randn(3, 4)
    expected = [block(x) for block in blocks]
    weights = [block.first.weight for block in blocks]
    files = BlockFiles(tmp_path / "scratch")
    files.map_all(blocks)
    assert [p.name for p in files.files()] == ["block-0000-1.pt", "block-0001-2.pt"]
    for index, block in enumerate(blocks):
        assert torch.equal(block(x), expected[index])
        assert block.first.weight is weights[index]  # parameters keep their identity
        assert block.second.weight is block.first.weight  # tied
        assert block.inner.scale is block.first.scale  # one buffer, two holders
        assert set(backing_files(block_tensors(block))) == {str(files.files()[index])}
    # a pruned block: changed in place, then written to a fresh file; the old file goes
    with torch.no_grad():
        blocks[0].first.weight[0] = 0.0
    old = files.files()[0]
    files.map(blocks[0])
    assert files.files()[0].name == "block-0000-3.pt" and not old.exists()
    assert bool((blocks[0].first.weight[0] == 0).all())
    assert set(backing_files(block_tensors(blocks[0]))) == {str(files.files()[0])}
    # a visit elsewhere (a copy, as a device would make), then back onto the mapping
    blocks[1].to(torch.float64)
    assert backing_files([blocks[1].first.weight]) == [""]
    files.restore(blocks[1])
    assert blocks[1].first.weight.dtype == torch.float32
    assert set(backing_files(block_tensors(blocks[1]))) == {str(files.files()[1])}
    assert blocks[1].inner.scale is blocks[1].first.scale
    files.close()
    assert not (tmp_path / "scratch").exists()
    assert torch.equal(blocks[1](x), expected[1])  # a mapping outlives its deleted file


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


def test_the_cli_runs_with_offload_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight(TINY.replace(offload="disk"))  # no longer refused
    args = ["--model", "tiny-random", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2"]
    result = CliRunner().invoke(app, ["prune", *args, "--offload", "disk", "--out", "run"])
    assert result.exit_code == 0, result.stderr
    assert "; offload disk (none " in result.stderr.splitlines()[0]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["offload"] == "disk"
    assert (run_dir / "model").is_dir() and not (run_dir / OFFLOAD_DIR).exists()
    events = [from_json(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    texts = [e.text for e in events if isinstance(e, Note)]
    assert any(t.startswith("offload disk: ") and "memory-mapped" in t for t in texts), texts


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


def test_disk_offload_keeps_one_block_of_weights_in_host_memory() -> None:
    config = RunConfig(nsamples=128, seqlen=2048, dtype="bfloat16", eval_windows=40)
    guess = llama_7b(config.replace(offload="disk"), device="cuda", available_mb=16_000.0)
    assert guess.offload == "disk" and not guess.reason
    none, cpu, disk = guess.modes
    assert [m.mode for m in guess.modes] == ["none", "cpu", "disk"]
    assert (disk.pruning, disk.evaluation, disk.device) == (cpu.pruning, cpu.evaluation, cpu.device)
    assert guess.memory_mb == pytest.approx(disk.device, abs=0.1)
    # the host keeps the weights outside the blocks and one block, not the 31 others
    block = (2 * 4096**2 + 2 * 4096**2 + 3 * 4096 * 11008) * 2 / 2**20
    assert cpu.host - disk.host == pytest.approx(31 * block)
    assert disk.host < cpu.host and disk.loading == cpu.loading == none.loading > disk.host / 2
    # on the CPU the load of the whole model is the floor: disk saves the rest
    small = config.replace(nsamples=16, seqlen=256, eval_windows=2)
    on_cpu = llama_7b(small.replace(offload="disk"))
    cpu_mode, disk_mode = on_cpu.mode("cpu"), on_cpu.mode("disk")
    assert disk_mode.on("cpu") < cpu_mode.on("cpu") - 3000
    assert disk_mode.on("cpu") >= estimate.BASE_MEMORY_MB + disk_mode.loading
    assert on_cpu.memory_mb == pytest.approx(disk_mode.on("cpu"), abs=0.1)
    # the pre-flight line gives disk's figures (on CUDA: its host memory once loaded)
    text = offload_text(guess, "cuda")
    assert text.startswith("offload disk (none 63.3 GB on cuda; cpu 8.7 GB on cuda + ")
    assert text.endswith("; disk 8.7 GB on cuda + 21.6 GB of host memory once loaded)"), text
    assert offload_text(on_cpu, "cpu").endswith(", disk 12.9 GB)")
    # auto never picks disk
    tight = llama_7b(config.replace(offload="auto"), device="cuda", available_mb=1.0)
    assert tight.offload == "cpu"


def test_the_host_warning_advises_disk_when_it_fits() -> None:
    config = RunConfig(nsamples=128, seqlen=2048, dtype="bfloat16", eval_windows=40)
    guess = llama_7b(config.replace(offload="cpu"), device="cuda", available_mb=16_000.0)
    (warning,) = host_warning(guess, free=25_000.0)
    assert warning.startswith("warning: with --offload cpu this run keeps about 33.7 GB")
    assert "use --offload disk, fewer --nsamples" in warning
    assert host_warning(guess, free=40_000.0) == ()
    disk = llama_7b(config.replace(offload="disk"), device="cuda", available_mb=16_000.0)
    (warning,) = host_warning(disk, free=20_000.0)
    assert warning.startswith("warning: with --offload disk this run keeps about 22.0 GB")
    assert "--offload disk" not in warning.split(":", 1)[1].split("use", 1)[1]


def test_the_preflight_line_states_the_mode_and_each_modes_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(system, "available_memory_mb", lambda device=None: 64_000.0)
    line = estimate_lines(TINY).line
    assert line.startswith("pre-flight: about ")
    assert line.endswith("; offload none (none 402 MB, cpu 402 MB, disk 401 MB)"), line
    chosen = estimate_lines(TINY.replace(offload="auto")).line
    assert "; offload none, chosen by auto: the device is the CPU" in chosen


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_offload_matches_cuda_without_offload() -> None:
    results = {}
    for mode in ("none", "cpu", "disk"):
        events = list(stream(TINY.replace(device="cuda", offload=mode)))
        assert isinstance(events[-1], Finished), events[-1]
        results[mode] = (perplexities(events), events[-1])
    (plain, _), (offloaded, finished) = results["none"], results["cpu"]
    for label, ppl in plain.items():
        assert offloaded[label] == pytest.approx(ppl, rel=1e-4)
    assert finished.peak_memory_mb > 0
    assert results["disk"][0] == pytest.approx(offloaded, rel=1e-5)  # the same, from files
