"""The names of the files in a run directory that the solver itself reads or writes.

The run store (``duogpt_tui.runstore``) owns the run directory's layout and re-exports these
names; they live here because ``solver`` never imports the app. Nothing else in ``solver``
spells them out.
"""

from __future__ import annotations

EVENTS_FILE = "events.jsonl"
"""One event per line (written by the run store; ``solver.run.evaluate`` looks for it)."""

MODEL_DIR = "model"
"""The pruned model, loadable with ``from_pretrained``."""

ACT_SETTINGS_FILE = "activation_sparsity.json"
"""In :data:`MODEL_DIR`: the activation-sparsity rule, its sparsity and calibrated thresholds."""

CHECKPOINTS_DIR = "checkpoints"
"""Per-block checkpoints of a run that can be resumed."""

CHECKPOINT_STATE = "state.json"
"""In :data:`CHECKPOINTS_DIR`: the last complete block (written last, so it marks a whole set)."""

OFFLOAD_DIR = "offload"
"""With ``--offload disk``: the blocks' memory-mapped weight files, removed when the run ends."""
