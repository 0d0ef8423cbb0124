"""What ``duogpt`` prints on stdout: a run's result as one line of text or one JSON object.

The result is built from the run's :class:`~duogpt_tui.runview.RunView` and its run directory, so
the CLI, the TUI and scripts all read the same figures. Numbers are written by
:mod:`duogpt_tui.formatting`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.formatting import number, percent
from duogpt_tui.runstore import REPORT_FILE
from duogpt_tui.runview import RunView
from solver import events as ev

RESULT_KEYS = (
    "run_dir",
    "status",
    "model",
    "method",
    "pattern",
    "weight_sparsity",
    "act_sparsity",
    "ppl_dense",
    "ppl_dense_act",
    "ppl",
    "protocol",
    "tasks",
    "seconds",
    "peak_memory_mb",
    "blocks_done",
    "n_blocks",
    "report",
)
"""The keys of a run's result, in the order they are printed."""

EXIT_CODES = {"finished": ExitCode.OK, "failed": ExitCode.FAILED, "cancelled": ExitCode.CANCELLED}
"""Exit code of ``duogpt prune`` by final status (a failure with bad input exits 2)."""


def run_result(
    events: Sequence[ev.Event] | RunView,
    run_dir: Path | None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result of a run: the headline figures, its directory, and the error when it failed.

    Args:
        events: the run's events, or its view.
        run_dir: the run directory (None when no run directory was made).
        config: the run's configuration, for runs that failed before they started (not used
            with a view, which has its own).

    Returns:
        A dict with :data:`RESULT_KEYS` (plus ``error`` and ``category`` when failed):
        ``protocol`` is how the perplexities were measured (the last reference perplexity's
        protocol: text, text_sha256, text_tokens, token_spans...), ``tasks`` the zero-shot task
        scores by label (``{"dense": {task: {"acc", ...}}, "pruned": {...}}``; None without
        ``--tasks``).
    """
    view = events if isinstance(events, RunView) else RunView.of(events, config)
    head = view.headline()
    result: dict[str, Any] = {key: head.get(key) for key in RESULT_KEYS}
    references = list(view.reference_perplexities().values())
    result["protocol"] = dict(references[-1].protocol) if references else None
    scores = {event.label: dict(event.tasks) for event in view.task_scores}
    result["tasks"] = scores or None
    result["run_dir"] = str(run_dir) if run_dir is not None else None
    report = run_dir / REPORT_FILE if run_dir is not None else None
    result["report"] = str(report) if report is not None and report.is_file() else None
    if head["status"] == "running":
        result["status"] = "failed"
        result["error"] = "the run ended without a final event"
        result["category"] = "run"
    if head["status"] == "failed":
        result["error"] = head["error"]
        result["category"] = head["category"]
    if head["status"] == "cancelled":
        result["stopped_block"] = head["stopped_block"]
    return result


def input_error_result(message: str) -> dict[str, Any]:
    """The result printed with ``--json`` when bad input stopped the command before a run."""
    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result.update(status="failed", category="input", error=message, blocks_done=0)
    return result


def exit_code(result: dict[str, Any]) -> ExitCode:
    """The process exit code for a result: 0 done, 1 run failed, 2 bad input, 130 cancelled."""
    if result.get("status") == "failed" and result.get("category") == "input":
        return ExitCode.INPUT
    return EXIT_CODES.get(str(result.get("status")), ExitCode.FAILED)


def to_json(result: dict[str, Any]) -> str:
    """One strict JSON object on one line (non-finite numbers become null)."""
    return json.dumps(_finite_or_null(result), ensure_ascii=False, allow_nan=False)


def one_line(result: dict[str, Any]) -> str:
    """A one-line, human-readable summary of a run's result."""
    parts = [str(result.get("status"))]
    if result.get("method"):
        parts.append(str(result["method"]))
    if result.get("model"):
        parts.append(str(result["model"]))
    parts.append(f"W {percent(result.get('weight_sparsity'))}")
    parts.append(f"X {percent(result.get('act_sparsity'))}")
    dense, dense_act, pruned = result.get("ppl_dense"), result.get("ppl_dense_act"), result["ppl"]
    if dense is not None or pruned is not None:
        ppl = f"ppl {number(dense)} -> {number(pruned)}"
        if dense_act is not None:
            ppl += f" (dense+X {number(dense_act)})"
        parts.append(ppl)
    for label, tasks in (result.get("tasks") or {}).items():
        scores = ", ".join(f"{name} {percent(row.get('acc'))}" for name, row in tasks.items())
        parts.append(f"{label} acc: {scores}")
    if result.get("seconds") is not None:
        parts.append(f"{number(result['seconds'], 1)}s")
    if result.get("run_dir"):
        parts.append(str(result["run_dir"]))
    return "  ".join(parts)


def _finite_or_null(value: Any) -> Any:
    """Replace non-finite floats (anywhere in nested dicts and lists) with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
