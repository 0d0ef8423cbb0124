"""The pruned model into the run directory: weights, tokenizer and activation settings.

``duogpt eval RUN_DIR`` (:mod:`solver.run.evaluate`) reads what is written here: the ``model/``
folder loads with ``from_pretrained``, and ``activation_sparsity.json`` holds the rule, the
sparsity and the calibrated thresholds that evaluation must apply again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from solver.config import RunConfig
from solver.io.run_files import ACT_SETTINGS_FILE, MODEL_DIR

if TYPE_CHECKING:
    from solver.io.models import LoadedModel


def save_model(
    loaded: LoadedModel,
    config: RunConfig,
    thresholds: dict[str, float],
    linears: Mapping[str, nn.Module],
    workdir: Path,
) -> Path:
    """Save the pruned model, its tokenizer and the activation settings (write, then rename).

    Args:
        loaded: the loaded model and tokenizer (:class:`solver.io.models.LoadedModel`).
        config: the run's configuration.
        thresholds: calibrated activation thresholds by full layer name.
        linears: the model's prunable layers by full name.
        workdir: the run directory.

    Returns:
        The model folder, ``workdir / "model"``.
    """
    from solver.io.models import quiet_transformers

    target = Path(workdir) / MODEL_DIR
    partial = Path(workdir) / f"{MODEL_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with quiet_transformers():
        loaded.model.save_pretrained(partial)
        loaded.tokenizer.save_pretrained(partial)
    settings = act_settings(config, thresholds, linears)
    (partial / ACT_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target


def act_settings(
    config: RunConfig, thresholds: dict[str, float], linears: Mapping[str, nn.Module]
) -> dict[str, Any]:
    """What is needed to evaluate a pruned model again with its activation sparsity."""
    return {
        "sparsity": config.act_sparsity,
        "rule": config.act_rule,
        "thresholds": {k: thresholds[k] for k in sorted(thresholds)},
        "layers": sorted(linears),
        "method": config.method,
        "weight_sparsity": config.target_weight_sparsity,
        "pattern": config.pattern,
        "dtype": config.dtype,
    }
