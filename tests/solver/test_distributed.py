"""Data-parallel calibration (issue 14): bin packing, sharding, and a 2-rank gloo run on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duogpt_tui.runner import stream
from solver.config import OPTION, RunConfig
from solver.errors import InputError
from solver.events import (
    BlockFinished,
    Cancelled,
    Event,
    Finished,
    LayerSolved,
    Note,
    PerplexityMeasured,
    from_json,
    to_json,
)
from solver.run.distributed import TIMEOUT_S, Ranks, checked, owners_by_packing
from tests.solver.families import save_tiny, write_texts
from tests.solver.test_pipeline import TINY as PIPELINE_TINY

TINY = PIPELINE_TINY.replace(eval_dense=False, checkpoints=False)
"""The pipeline tests' tiny run, without the dense evaluations and checkpoints."""

WORKER = """
import json, os, sys
from pathlib import Path
from solver.config import OPTION, RunConfig
from duogpt_tui.runner import stream
from solver.events import BlockStarted, to_json
config = RunConfig.from_dict(json.loads(sys.argv[1]))
out, mode = Path(sys.argv[2]), sys.argv[3]
rank = int(os.environ["RANK"])

class AfterFirstBlock:  # rank 0 cancels once block 1 starts (block 0's checkpoint is written
    # then: a cancel seen on BlockFinished raced the ranks' gather of the streams for it)
    def is_set(self):
        return (out / "cancel").exists()

cancel = AfterFirstBlock()
lines = []
for event in stream(config, cancel, workdir=out, resume=mode == "resume"):  # rank 0 alone writes
    lines.append(to_json(event))
    if mode == "cancel" and rank == 0 and isinstance(event, BlockStarted) and event.block == 1:
        (out / "cancel").touch()
(out / f"events{rank}.jsonl").write_text("\\n".join(lines))
"""


def test_bin_packing_gives_the_largest_first_to_the_least_loaded() -> None:
    loads = [0, 0]
    owners = owners_by_packing([("q", 4), ("k", 4), ("v", 4)], loads)
    assert owners == {"k": 0, "q": 1, "v": 0} and loads == [8, 4]
    assert owners_by_packing([("o", 4)], loads) == {"o": 1} and loads == [8, 8]


def test_batches_are_dealt_round_robin_with_their_global_rows() -> None:
    batches = list(torch.split(torch.arange(5).reshape(5, 1), 2))  # rows 0-1, 2-3, 4
    second = Ranks(rank=1, world=2)
    assert [b[:, 0].tolist() for b in second.shard(batches)] == [[2, 3]]
    assert second.starts == [2]
    first = Ranks(rank=0, world=2)
    assert len(first.shard(batches)) == 2 and first.starts == [0, 4]
    with pytest.raises(InputError, match="cannot feed 4 ranks"):
        Ranks(rank=0, world=4).shard(batches)


def test_unlaunched_ranks_are_refused_and_the_rank_count_is_recorded() -> None:
    with pytest.raises(InputError, match="needs its ranks launched"):
        checked(TINY.replace(nproc=2), None)
    assert checked(TINY, Ranks(rank=0, world=2)).nproc == 2


def test_the_nproc_help_states_the_timeout() -> None:
    assert f"after {TIMEOUT_S} s" in OPTION["nproc"].help


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_ranks(config: RunConfig, out: Path, mode: str = "run") -> None:
    """Run ``config`` as 2 gloo ranks on CPU, each a fresh interpreter, both given ``out``
    (only rank 0 writes there); ``mode``: ``run``, ``resume``, or ``cancel`` once block 1 starts."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(config.to_dict()), str(out), mode],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny Mixtral (fused experts) and the short texts, as run options."""
    folder = save_tiny("mixtral", tmp_path_factory.mktemp("mixtral") / "model")
    texts = write_texts(folder.parent)
    return {"model": str(folder), "calib": str(texts["calib"]), "eval": str(texts["eval"])}


def _rank_events(folder: Path) -> list[list[Event]]:
    """The events each rank of a :func:`_two_ranks` run yielded."""
    return [
        [from_json(line) for line in (folder / f"events{r}.jsonl").read_text().splitlines()]
        for r in range(2)
    ]


def _ppl(events: list[Event]) -> float:
    """The pruned model's perplexity."""
    return next(e.ppl for e in events if isinstance(e, PerplexityMeasured) and e.label == "pruned")


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "duogpt", "act_sparsity": 0.5, "alpha_select": "heldout"},
        {"method": "sparsegpt", "act_sparsity": 0.0},
        {"method": "duogpt", "act_rule": "threshold"},
        {"model": "mixtral", "act_rule": "threshold"},
        {"method": "sparsegpt", "act_rule": "threshold"},
    ],
    ids=["duogpt-heldout", "sparsegpt", "threshold", "mixtral-threshold", "sparsegpt-threshold"],
)
def test_two_ranks_prune_like_one_process(
    tmp_path: Path, changes: dict[str, object], request: pytest.FixtureRequest
) -> None:
    if changes.get("model") == "mixtral":
        changes = {**changes, **request.getfixturevalue("mixtral")}
    config = TINY.replace(**changes)
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir()
    two_dir.mkdir()
    one = list(stream(config, workdir=one_dir))
    _two_ranks(config.replace(nproc=2), two_dir)
    ranks = _rank_events(two_dir)
    assert [to_json(e) for e in ranks[0] if isinstance(e, LayerSolved)] == [
        to_json(e) for e in ranks[1] if isinstance(e, LayerSolved)
    ], "every rank yields the owners' events"
    solved = [[e for e in events if isinstance(e, LayerSolved)] for events in (one, ranks[0])]
    assert [e.name for e in solved[0]] == [e.name for e in solved[1]]
    for a, b in zip(*solved, strict=True):
        assert a.weight_sparsity == b.weight_sparsity
        assert b.error_after == pytest.approx(a.error_after, rel=1e-3, abs=1e-6)
    notes = [[e.text for e in events if isinstance(e, Note)] for events in (one, ranks[0])]
    assert [n for n in notes[0] if "per expert" in n] == [n for n in notes[1] if "per expert" in n]
    started = next(e for e in ranks[0] if type(e).__name__ == "RunStarted")
    assert started.config["nproc"] == 2  # type: ignore[attr-defined]
    assert _ppl(ranks[0]) == pytest.approx(_ppl(one), rel=5e-3)
    assert isinstance(ranks[0][-1], Finished) and isinstance(ranks[1][-1], Finished)
    weights = [load_file(d / "model" / "model.safetensors") for d in (one_dir, two_dir)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert not (two_dir / "model").is_symlink()
    if config.act_rule == "threshold":  # one quantile over every rank's inputs
        saved = [
            json.loads((d / "model" / "activation_sparsity.json").read_text())
            for d in (one_dir, two_dir)
        ]
        # the same tolerance as the weights: the ranks' streams differ in summation order only
        assert saved[1]["thresholds"] == pytest.approx(saved[0]["thresholds"], rel=1e-4)


def test_two_rank_checkpoints_hold_every_batch_and_resume_with_any_rank_count(
    tmp_path: Path,
) -> None:
    config = TINY.replace(nsamples=8, act_rule="threshold", checkpoints=True)
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir()
    two_dir.mkdir()
    whole = list(stream(config, workdir=one_dir))  # uninterrupted, one process
    _two_ranks(config.replace(nproc=2), two_dir, mode="cancel")
    assert all(isinstance(events[-1], Cancelled) for events in _rank_events(two_dir))
    # the same checkpoint as one process's, with every rank's batches in the global order
    single = tmp_path / "single"
    single.mkdir()
    cancel = threading.Event()
    for event in stream(config, cancel, workdir=single):
        if isinstance(event, BlockFinished):
            cancel.set()
    saved = [
        torch.load(d / "checkpoints" / "streams.pt", weights_only=True) for d in (single, two_dir)
    ]
    assert saved[0]["block"] == saved[1]["block"] == 0
    assert len(saved[1]["dense"]) == len(saved[0]["dense"]) == 4
    for key in ("dense", "compressed"):
        for a, b in zip(saved[0][key], saved[1][key], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    resumed = list(stream(config, workdir=two_dir, resume=True))  # one rank goes on
    assert isinstance(resumed[-1], Finished)
    assert _ppl(resumed) == pytest.approx(_ppl(whole), rel=5e-3)
    solved = [
        {e.name: e.weight_sparsity for e in events if isinstance(e, LayerSolved) and e.block == 1}
        for events in (whole, resumed)
    ]
    assert solved[0] == solved[1]
