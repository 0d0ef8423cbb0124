"""Validation of the setup form's fields, one field at a time (no Textual here).

Each checker takes the field's text and returns ``(value, problem, hint)``: the parsed value, the
one-line reason it is invalid (empty when valid) and a muted hint to show when it is valid. The
numbers are checked by :meth:`solver.config.RunConfig.validate` itself and the pattern by
:func:`solver.config.parse_pattern`, so the form and the CLI agree on every rule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from solver.config import RunConfig, parse_pattern
from solver.errors import InputError

Check = tuple[Any, str, str]
"""``(value, problem, hint)`` from a field checker."""

FLOAT_FIELDS = {
    "weight_sparsity": "weight sparsity",
    "act_sparsity": "activation sparsity",
    "alpha": "alpha",
}
"""Fields typed as numbers, with their readable names."""

INT_FIELDS = {
    "nsamples": "samples",
    "seqlen": "sequence length",
    "eval_windows": "evaluation windows",
    "seed": "seed",
    "proxy_every": "proxy every",
}
"""Fields typed as integers, with their readable names."""


def _config_problem(name: str, value: Any) -> str:
    """The reason ``RunConfig.validate`` gives for ``value`` in field ``name`` (empty if valid)."""
    try:
        RunConfig().replace(**{name: value}).validate()
    except InputError as error:
        return str(error)
    return ""


def check_float(name: str, text: str) -> Check:
    """Parse and validate a number field."""
    try:
        value = float(text.strip())
    except ValueError:
        return None, f"{FLOAT_FIELDS[name]} must be a number, got {text.strip()!r}", ""
    return value, _config_problem(name, value), ""


def check_int(name: str, text: str) -> Check:
    """Parse and validate an integer field (``seed`` may be any integer)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None, f"{INT_FIELDS[name]} must be a whole number, got {text.strip()!r}", ""
    if name == "seed":
        return value, "", ""
    return value, _config_problem(name, value), ""


def check_pattern(text: str) -> Check:
    """``unstructured`` or ``N:M``."""
    try:
        nm = parse_pattern(text)
    except InputError as error:
        return None, str(error), ""
    if nm is None:
        return "unstructured", "", ""
    n, m = nm
    return f"{n}:{m}", "", f"{n} of every {m} weights pruned ({n / m:.0%})"


def _looks_like_path(spec: str) -> bool:
    """True for specs that can only mean a file or folder (not a built-in name or hub id)."""
    return spec.startswith((".", "/", "~")) or spec.endswith((".gguf", ".txt", ".jsonl"))


def check_model(spec: str, builtins: dict[str, str]) -> Check:
    """A built-in name, a local folder or ``.gguf`` file, or a hub id ``org/name``."""
    spec = spec.strip()
    if not spec:
        return None, "type a model folder, .gguf file or hub id (ctrl+o browses)", ""
    if spec in builtins:
        return spec, "", builtins[spec]
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return None, f"{path} has no config.json: pick a Hugging Face model folder", ""
        return spec, "", "local model folder"
    if path.is_file():
        if path.suffix != ".gguf":
            return None, f"{path} is a file but not .gguf: pick a model folder or a .gguf file", ""
        return spec, "", "GGUF file (dequantised on load)"
    if _looks_like_path(spec) or spec.count("/") != 1:
        return None, f"{spec!r} not found: give a built-in name, a folder, a .gguf or org/name", ""
    return spec, "", "hub id: read from the Hugging Face cache, or downloaded when online"


def check_text(spec: str, texts: dict[str, str]) -> Check:
    """A built-in corpus, ``wikitext2``/``c4``, or a local ``.txt``/``.jsonl`` file."""
    spec = spec.strip()
    if not spec:
        return None, "type a .txt or .jsonl file (ctrl+o browses)", ""
    if spec in texts:
        return spec, "", texts[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        return None, f"{spec!r} is not a file: give a built-in text or a .txt / .jsonl file", ""
    return spec, "", f"local file, {path.stat().st_size / 1024:.0f} KiB"


NUMBER_CHECKERS: dict[str, Callable[[str], Check]] = {
    **{name: (lambda text, name=name: check_float(name, text)) for name in FLOAT_FIELDS},
    **{name: (lambda text, name=name: check_int(name, text)) for name in INT_FIELDS},
    "pattern": check_pattern,
}
"""Checker per typed field (except the model and text sources, which need the catalog)."""
