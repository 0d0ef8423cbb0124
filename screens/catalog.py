"""What the setup screen offers to pick from: models, texts and devices.

:meth:`Catalog.discover` imports the solver (torch) and scans the Hugging Face cache, so the App
calls it on a thread worker; tests inject a fixed catalog so pictures do not depend on the
machine's cache or accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATASET_TEXTS = {
    "wikitext2": "WikiText-2 (Hugging Face datasets; downloads when online)",
    "c4": "C4 validation shard (Hugging Face datasets; downloads when online)",
}
"""Text sources that come from the ``datasets`` library rather than from a file."""


@dataclass(frozen=True)
class Catalog:
    """The choices of the setup screen's pickers.

    Attributes:
        models: built-in model names -> description.
        cached_models: hub ids found in the local Hugging Face cache.
        texts: built-in corpora and dataset names -> description.
        devices: devices to offer (``auto``, ``cpu``, and ``cuda`` only when CUDA is present).
    """

    models: dict[str, str] = field(default_factory=dict)
    cached_models: tuple[str, ...] = ()
    texts: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ("auto", "cpu")

    @classmethod
    def discover(cls) -> Catalog:
        """Look at the solver's built-ins, the local hub cache and the accelerator (slow: torch)."""
        from solver.io.models import BUILTIN_MODELS, find_cached_hub_models

        try:
            from solver.io.data import BUILTIN_TEXTS

            texts = dict(BUILTIN_TEXTS)
        except ImportError:  # an older solver without the data module
            texts = {"sotu": "State of the Union addresses", "moby-dick": "Moby-Dick"}
        import torch

        devices = ("auto", "cpu", "cuda") if torch.cuda.is_available() else ("auto", "cpu")
        return cls(
            models=dict(BUILTIN_MODELS),
            cached_models=tuple(find_cached_hub_models()),
            texts={**texts, **DATASET_TEXTS},
            devices=devices,
        )

    def model_choices(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for the model picker: built-ins first, then cached hub ids."""
        choices = [(name, name) for name in self.models]
        choices += [(f"{hub_id} (cached)", hub_id) for hub_id in self.cached_models]
        return choices

    def text_choices(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for the calibration and evaluation pickers."""
        return [(name, name) for name in self.texts]
