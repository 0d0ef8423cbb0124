"""How a run stops early: the exception the pipeline raises says where, its cause says why."""

from __future__ import annotations

import threading

from solver.errors import RunError
from solver.run.perplexity import EvalCancelled
from solver.run.stop import NEVER, CancelToken, RunCancelled, RunStopped
from tests.test_import_hygiene import loaded_after_import


def test_a_cancel_says_where_the_run_was() -> None:
    stop = RunStopped(RunCancelled(), t=1.5, block=2, phase="while pruning")
    assert stop.cancelled and isinstance(stop.__cause__, RunCancelled)
    assert (str(stop), stop.t, stop.block) == ("cancelled while pruning", 1.5, 2)
    assert RunStopped(EvalCancelled(1, 4), t=0, block=-1, phase="during x").cancelled


def test_a_failure_keeps_its_first_line() -> None:
    stop = RunStopped(RunError("block 0 q_proj: NaN\nmore"), t=0.0, block=0, phase="while pruning")
    assert not stop.cancelled
    assert str(stop) == "RunError: block 0 q_proj: NaN"


def test_tokens() -> None:
    tokens: list[CancelToken] = [NEVER, threading.Event()]
    assert not any(token.is_set() for token in tokens)


def test_the_stop_module_is_light() -> None:
    """The runner and the CLI import it without loading torch."""
    assert "torch" not in loaded_after_import(["solver.run.stop"])
