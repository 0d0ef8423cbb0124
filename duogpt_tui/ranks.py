"""``duogpt prune --nproc N``: launching the ranks, and the quiet life of ranks other than 0.

The solver does the data-parallel work (:mod:`solver.run.distributed`); this module is the app's
part of it. Outside ``torchrun``, :func:`launch` starts ``python -m torch.distributed.run
--standalone --nproc-per-node N`` on this same command line, so each rank runs ``duogpt prune``
again. Under ``torchrun`` (launched so, or by the user), rank 0 is an ordinary ``duogpt prune``:
it alone makes the run directory, records the events and prints the result; every other rank
runs the pipeline with no run directory (:func:`run_quietly`) and prints only a one-line error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.progress import cancel_on_signals
from solver.config import RunConfig

__all__ = ["ARGV_VARIABLE", "launch", "launched_world", "rank", "run_quietly"]

ARGV_VARIABLE = "DUOGPT_RANK_ARGV"
"""The environment variable that hands each launched rank the ``duogpt`` command line (JSON)."""


def launched_world() -> int:
    """The number of ranks this process was launched with (1 outside ``torchrun``).

    Read from the environment here, so that ``duogpt --help`` loads no torch.
    """
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0") or 0)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``duogpt`` with ``argv`` (``prune ...``) as ``nproc`` ranks; their launcher's exit code.

    ``torchrun`` exits 0 when every rank did, else 1 (whichever rank failed or was cancelled:
    rank 0's run directory says which); when one rank dies it stops the others.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "duogpt_tui.ranks",
    ]
    # the command line travels in the environment: torchrun's own parser would take --nproc
    env = dict(os.environ, **{ARGV_VARIABLE: json.dumps(argv)})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # the ranks saw the signal too and stop themselves
        return int(ExitCode.CANCELLED)


def run_quietly(config: RunConfig) -> ExitCode:
    """A rank other than 0: run the pipeline without a run directory; its exit code.

    The run ends as every run does, with the terminal event the runner makes
    (:func:`duogpt_tui.runner.stream`); only its exit code and a failure's one line show.
    """
    from duogpt_tui.runner import stream
    from solver import events as ev

    cancel = threading.Event()
    ending: ev.Event | None = None
    with cancel_on_signals(cancel):
        for event in stream(config, cancel):
            ending = event
    if isinstance(ending, ev.Cancelled):
        return ExitCode.CANCELLED
    if isinstance(ending, ev.Failed):
        print(f"error (rank {rank()}): {ending.error}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _main() -> None:
    """A launched rank: ``duogpt`` with the command line of :data:`ARGV_VARIABLE`."""
    from duogpt_tui.cli import main

    sys.argv = ["duogpt", *json.loads(os.environ[ARGV_VARIABLE])]
    main()


if __name__ == "__main__":
    _main()
