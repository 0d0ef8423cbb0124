"""Perplexity of a model or of a pruned run directory, with its activation sparsity.

``duogpt eval RUN_DIR`` reproduces a run's perplexity: the run's ``model/`` folder holds the
pruned weights and ``activation_sparsity.json`` (the rule, the sparsity and, for the threshold
rule, the calibrated thresholds), so evaluation applies exactly what the run applied
(ALGORITHM.md §7).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

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
) -> dict[str, Any]:
    """Perplexity of ``target`` on ``windows`` x ``seqlen`` tokens of ``eval_text``.

    Args:
        target: a model spec (built-in name, folder, .gguf, hub id) or a run directory.
        eval_text: the evaluation text (same forms as ``--eval``).
        windows: non-overlapping windows to evaluate.
        seqlen: tokens per window.
        act_sparsity: override the activation sparsity (top-k); ``None`` uses the run's
            settings for a run directory and 0 for a plain model.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: windows per forward pass.
        progress: called with ``(done, total)`` windows.

    Returns:
        ``{"model", "ppl", "act_sparsity" (measured), "act_rule", "protocol"}``.

    Raises:
        InputError: bad target, text or option.
    """
    from solver.io.data import eval_protocol, eval_windows, load_text
    from solver.io.models import load_model
    from solver.run.perplexity import perplexity

    if act_sparsity is not None and not 0 <= act_sparsity < 1:
        raise InputError(f"--act-sparsity must be a number in [0, 1), got {act_sparsity!r}")
    torch_device = system.resolve_device(device)
    model_dir = run_model_dir(target)
    settings: dict[str, Any] = {"sparsity": 0.0, "rule": "topk", "thresholds": {}}
    if model_dir is not None:
        settings = json.loads((model_dir / ACT_SETTINGS_FILE).read_text())
        loaded = load_model(str(model_dir))
    else:
        loaded = load_model(target)
    if act_sparsity is not None:
        settings = {"sparsity": act_sparsity, "rule": "topk", "thresholds": {}}
    name, text = load_text(eval_text)
    tokens = eval_windows(loaded.tokenizer, text, windows, seqlen)
    adapter = find_adapter(loaded.model)
    sparsity = float(settings["sparsity"])
    sparsifier = ActivationSparsifier(sparsity, settings["rule"], settings.get("thresholds") or {})
    model: nn.Module = loaded.model
    model.to(torch_device)
    with sparsifier.attach(adapter.all_linears(model) if sparsity > 0 else {}):
        ppl = perplexity(
            model, tokens, device=torch_device, batch_size=batch_size, progress=progress
        )
    return {
        "model": str(model_dir.parent) if model_dir is not None else loaded.name,
        "ppl": float(ppl),
        "act_sparsity": sparsifier.mean_measured() if sparsity > 0 else 0.0,
        "act_rule": settings["rule"],
        "protocol": eval_protocol(name, tokens, loaded.tokenizer),
    }
