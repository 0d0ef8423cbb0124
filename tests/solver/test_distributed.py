"""Data-parallel calibration (issue 14): bin packing, sharding, and a 2-rank gloo run on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.errors import InputError
from solver.events import Finished, LayerSolved, PerplexityMeasured, from_json, to_json
from solver.run.distributed import Ranks, checked, owners_by_packing
from tests.solver.test_pipeline import TINY as PIPELINE_TINY

TINY = PIPELINE_TINY.replace(eval_dense=False, checkpoints=False)
"""The pipeline tests' tiny run, without the dense evaluations and checkpoints."""

WORKER = """
import sys
from pathlib import Path
from solver.config import RunConfig
from duogpt_tui.runner import stream
from solver.events import to_json
config = RunConfig.from_dict(__import__("json").loads(sys.argv[1]))
out = Path(sys.argv[2])
rank = int(__import__("os").environ["RANK"])
workdir = out if rank == 0 else None
lines = [to_json(e) for e in stream(config, workdir=workdir)]
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


def test_unlaunched_ranks_and_unsupported_options_are_refused() -> None:
    with pytest.raises(InputError, match="needs its ranks launched"):
        checked(TINY.replace(nproc=2), None, resume=False)
    ranks = Ranks(rank=0, world=2)
    assert checked(TINY, ranks, resume=False).nproc == 2
    with pytest.raises(InputError, match="threshold"):
        checked(TINY.replace(act_rule="threshold", act_sparsity=0.5), ranks, resume=False)
    with pytest.raises(InputError, match="resumed"):
        checked(TINY, ranks, resume=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_ranks(config: RunConfig, out: Path) -> None:
    """Run ``config`` as 2 gloo ranks on CPU, each a fresh interpreter."""
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
                [sys.executable, "-c", WORKER, json.dumps(config.to_dict()), str(out)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "duogpt", "act_sparsity": 0.5, "alpha_select": "heldout"},
        {"method": "sparsegpt", "act_sparsity": 0.0},
    ],
)
def test_two_ranks_prune_like_one_process(tmp_path: Path, changes: dict[str, object]) -> None:
    config = TINY.replace(**changes)
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir()
    two_dir.mkdir()
    one = list(stream(config, workdir=one_dir))
    _two_ranks(config.replace(nproc=2), two_dir)
    ranks = [
        [from_json(line) for line in (two_dir / f"events{r}.jsonl").read_text().splitlines()]
        for r in range(2)
    ]
    assert [to_json(e) for e in ranks[0] if isinstance(e, LayerSolved)] == [
        to_json(e) for e in ranks[1] if isinstance(e, LayerSolved)
    ], "every rank yields the owners' events"
    solved = [[e for e in events if isinstance(e, LayerSolved)] for events in (one, ranks[0])]
    assert [e.name for e in solved[0]] == [e.name for e in solved[1]]
    for a, b in zip(*solved, strict=True):
        assert a.weight_sparsity == b.weight_sparsity
        assert b.error_after == pytest.approx(a.error_after, rel=1e-3, abs=1e-6)
    started = next(e for e in ranks[0] if type(e).__name__ == "RunStarted")
    assert started.config["nproc"] == 2  # type: ignore[attr-defined]
    ppl = [
        next(e.ppl for e in events if isinstance(e, PerplexityMeasured))
        for events in (one, ranks[0])
    ]
    assert ppl[1] == pytest.approx(ppl[0], rel=5e-3)
    assert isinstance(ranks[0][-1], Finished) and isinstance(ranks[1][-1], Finished)
    weights = [load_file(d / "model" / "model.safetensors") for d in (one_dir, two_dir)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert not (two_dir / "model").is_symlink()
