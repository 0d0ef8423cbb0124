"""Perplexity or zero-shot accuracy of a model or of a pruned run directory, with its
activation sparsity.

``duogpt eval RUN_DIR`` reproduces a run's perplexity: the run's ``model/`` folder holds the
pruned weights and ``activation_sparsity.json`` (the rule, the sparsity and, for the threshold
rule, the calibrated thresholds), so evaluation applies exactly what the run applied
(ALGORITHM.md §7), to the model in the dtype the run held it in (:func:`run_dtype`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from solver.config import DTYPES
from solver.errors import InputError
from solver.io import system
from solver.io.run_files import ACT_SETTINGS_FILE, EVENTS_FILE, MODEL_DIR
from solver.math.activations import ActivationSparsifier
from solver.run.adapters import find_adapter


def run_model_dir(target: str) -> Path | None:
    """The pruned model folder if ``target`` is a run directory (or its ``model/``), else None."""
    path = Path(target).expanduser()
    for candidate in (path / MODEL_DIR, path):
        if (candidate / ACT_SETTINGS_FILE).is_file():
            return candidate
    if (path / EVENTS_FILE).is_file():
        raise InputError(
            f"run directory {target!r} has no saved model (cancelled, failed, or run with "
            "--no-save-model): nothing to evaluate"
        )
    return None


def run_dtype(model_dir: Path, settings: dict[str, Any]) -> torch.dtype:
    """The dtype a run held its model in, to evaluate its saved model in the same one.

    The run's ``--dtype`` as ``activation_sparsity.json`` records it; for runs saved before it
    did, the dtype ``save_pretrained`` wrote into the model's ``config.json``; else float32.
    """
    name = settings.get("dtype")
    if name is None:
        try:
            saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if isinstance(saved, dict):
            name = saved.get("dtype") or saved.get("torch_dtype")
    return getattr(torch, name) if name in DTYPES else torch.float32


def evaluate(
    target: str,
    *,
    eval_text: str = "moby-dick",
    windows: int = 16,
    seqlen: int = 256,
    act_sparsity: float | None = None,
    device: str = "auto",
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    placement: str = "spread",
    calib_text: str | None = None,
    tasks: Sequence[str] = (),
    limit: int = 0,
) -> dict[str, Any]:
    """Perplexity of ``target`` on ``windows`` x ``seqlen`` tokens of ``eval_text``, or its
    zero-shot accuracy on ``tasks``.

    The model is loaded once; perplexity and tasks run with the same activation-sparsity hooks.

    Args:
        target: a model spec (built-in name, folder, .gguf, hub id) or a run directory (its
            model is loaded in the run's dtype, a model spec in float32).
        eval_text: the evaluation text (same forms as ``--eval``).
        windows: non-overlapping windows to evaluate.
        seqlen: tokens per window.
        act_sparsity: override the activation sparsity (top-k); ``None`` uses the run's
            settings for a run directory and 0 for a plain model.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: windows per forward pass.
        progress: called with ``(done, total)`` windows.
        placement: where the windows lie in the held-out text (``spread`` or ``first``).
        calib_text: the run's calibration text (same forms as ``--calib``): when it is the
            evaluation text, only the part calibration did not see is evaluated, as in the run.
        tasks: zero-shot task names; when given, the tasks run instead of the perplexity.
        limit: examples per task (0: each task's default).

    Returns:
        ``{"model", "ppl", "act_sparsity" (measured), "act_rule", "protocol"}``; with tasks,
        ``{"model", "tasks", "limit", "act_sparsity", "act_rule"}`` (``tasks``: name ->
        ``{"acc", "acc_norm", "acc_stderr", "n"}``).

    Raises:
        InputError: bad target, text, task or option.
    """
    from solver.io.data import eval_sample, held_out_cut, load_text
    from solver.io.models import load_model
    from solver.run.perplexity import perplexity
    from solver.run.tasks import check_tasks, run_tasks

    if act_sparsity is not None and not 0 <= act_sparsity < 1:
        raise InputError(f"--act-sparsity must be a number in [0, 1), got {act_sparsity!r}")
    if tasks:
        check_tasks(list(tasks))  # before the model loads: a bad name costs nothing
    torch_device = system.resolve_device(device)
    model_dir = run_model_dir(target)
    settings: dict[str, Any] = {"sparsity": 0.0, "rule": "topk", "thresholds": {}}
    if model_dir is not None:
        settings = json.loads((model_dir / ACT_SETTINGS_FILE).read_text())
        loaded = load_model(str(model_dir), dtype=run_dtype(model_dir, settings))
    else:
        loaded = load_model(target)
    if act_sparsity is not None:
        settings = {"sparsity": act_sparsity, "rule": "topk", "thresholds": {}}
    adapter = find_adapter(loaded.model)
    sparsity = float(settings["sparsity"])
    sparsifier = ActivationSparsifier(sparsity, settings["rule"], settings.get("thresholds") or {})
    model: nn.Module = loaded.model
    name = str(model_dir.parent) if model_dir is not None else loaded.name
    if tasks:
        model.to(torch_device)
        with sparsifier.attach(adapter.all_linears(model) if sparsity > 0 else {}):
            scores = run_tasks(
                model, loaded.tokenizer, list(tasks), limit=limit, batch_size=batch_size
            )
        return {
            "model": name,
            "tasks": scores,
            "limit": limit,
            "act_sparsity": sparsifier.mean_measured() if sparsity > 0 else 0.0,
            "act_rule": settings["rule"],
        }
    text_name, text = load_text(eval_text)
    cut = held_out_cut(load_text(calib_text)[1], text) if calib_text else None
    sample = eval_sample(
        loaded.tokenizer,
        text,
        windows,
        seqlen,
        name=text_name,
        placement=placement,
        chars=(cut, len(text)) if cut is not None else None,
    )
    if cut is not None:
        sample.protocol["calib_chars"] = [0, cut]
    model.to(torch_device)
    with sparsifier.attach(adapter.all_linears(model) if sparsity > 0 else {}):
        ppl = perplexity(
            model, sample.windows, device=torch_device, batch_size=batch_size, progress=progress
        )
    return {
        "model": name,
        "ppl": float(ppl),
        "act_sparsity": sparsifier.mean_measured() if sparsity > 0 else 0.0,
        "act_rule": settings["rule"],
        "protocol": sample.protocol,
    }
