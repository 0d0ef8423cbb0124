"""The built-in tasks' examples, for lm-evaluation-harness (each task's ``custom_dataset``).

lm-eval imports this file by its path (``!function docs.load`` in a task's YAML), not as part of
the ``solver`` package, so it imports nothing from ``solver``.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def read_docs(data_file: str) -> list[dict[str, Any]]:
    """The examples of ``data_file`` (an xz-compressed JSON-lines file next to this one)."""
    text = lzma.decompress((HERE / data_file).read_bytes()).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load(data_file: str, **_: Any) -> Any:
    """A ``datasets.DatasetDict`` with the examples as its ``test`` split (built in memory)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_docs(data_file))})
