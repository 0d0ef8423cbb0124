"""``duogpt prune --nproc 2``: the CLI launches two gloo ranks; rank 0 alone writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_prune_with_two_ranks_writes_one_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "duogpt_tui.cli", "prune", "--model", "tiny-random",
        "--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--eval-windows", "2",
        "--no-eval-dense", "--no-checkpoints", "--no-save-model", "--nproc", "2",
        "--out", str(out), "--json",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0's result only
    assert result["status"] == "finished"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["kind"] == "run_started")
    assert started["config"]["nproc"] == 2
    assert sum(e["kind"] == "finished" for e in events) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
