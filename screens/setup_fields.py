"""Validation of the setup form's fields (no Textual here).

Two stages. As you type, each checker takes the field's text and returns ``(value, problem,
hint)``: the parsed value, the one-line reason it is invalid (empty when valid) and a muted hint
to show when it is valid. The numbers and choices are checked by
:meth:`solver.config.RunConfig.validate` itself and the pattern by
:func:`solver.config.parse_pattern`, so the form and the CLI agree on every rule; a model or text
spec is only checked for its shape and existence here. Then, on a worker a moment after the last
change, :func:`inspect_inputs` runs the pre-flight's file and machine checks
(:mod:`solver.io.inputs`, :func:`solver.io.system.resolve_device`) on the whole config and says
which field each problem belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from solver.config import ACT_RULES, DTYPES, RunConfig, parse_pattern
from solver.errors import InputError

Check = tuple[Any, str, str]
"""``(value, problem, hint)`` from a field checker."""

FLOAT_FIELDS = {
    "weight_sparsity": "weight sparsity",
    "act_sparsity": "activation sparsity",
    "alpha": "alpha",
    "damping": "damping",
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


CHOICE_FIELDS = {"act_rule": ACT_RULES, "dtype": DTYPES}
"""Fields picked from a list (besides the method and the device), with their choices."""

DEEP_INPUTS: dict[str, tuple[str, ...]] = {
    "model": ("model", "seqlen"),
    "seqlen": ("model", "seqlen"),
    "calib": ("calib", "nsamples", "seqlen"),
    "eval": ("eval", "seqlen", "eval_windows"),
    "device": ("device",),
}
"""For each field :func:`inspect_inputs` may blame, the fields its check reads: a problem found
for one config still holds while these fields keep their values."""


def config_problem(name: str, value: Any) -> str:
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
    return value, config_problem(name, value), ""


def check_int(name: str, text: str) -> Check:
    """Parse and validate an integer field (``seed`` may be any integer)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None, f"{INT_FIELDS[name]} must be a whole number, got {text.strip()!r}", ""
    if name == "seed":
        return value, "", ""
    return value, config_problem(name, value), ""


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


def check_model(spec: str, builtins: dict[str, str]) -> Check:
    """A built-in name, a local folder or ``.gguf`` file, or a hub id ``org/name``.

    Only the spec's shape and existence are checked here; what the folder or file holds is
    checked by :func:`inspect_inputs`.
    """
    spec = spec.strip()
    if not spec:
        return None, "type a model folder, .gguf file or hub id (ctrl+o browses)", ""
    if spec in builtins:
        return spec, "", builtins[spec]
    path = Path(spec).expanduser()
    if path.is_dir():
        return spec, "", "local model folder"
    if path.is_file():
        return spec, "", "GGUF file (dequantised on load)" if path.suffix == ".gguf" else ""
    from solver.io.models import looks_like_path

    if looks_like_path(spec) or spec.count("/") != 1:
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


def check_choice(name: str, value: object) -> Check:
    """A value picked from a list (it can still be invalid when prefilled from the command line)."""
    return value, config_problem(name, value), ""


def inspect_inputs(config: RunConfig) -> dict[str, str]:
    """The pre-flight's file and machine checks of ``config``, by the field they blame.

    Runs what ``solver.run.pipeline.preflight`` runs beyond ``RunConfig.validate`` and the specs'
    existence: the device (:func:`solver.io.system.resolve_device`), the model's files and context
    (:func:`solver.io.inputs.check_model`) and the texts (:func:`solver.io.inputs.check_text`). Slow
    (imports torch, reads files, may probe the hub for a hub id): call it on a worker.

    Returns:
        ``{field: one-line problem}``; empty when the inputs look usable.
    """
    from solver.io import inputs, system

    problems: dict[str, str] = {}
    try:
        system.resolve_device(config.device)
    except InputError as error:
        problems["device"] = str(error)
    try:
        inputs.check_model(config.model, config.seqlen)
    except InputError as error:
        problems["seqlen" if str(error).startswith("--seqlen") else "model"] = str(error)
    try:
        inputs.check_text("--calib", config.calib, config.nsamples * config.seqlen)
    except InputError as error:
        problems["calib"] = str(error)
    if config.eval_windows > 0:
        try:
            inputs.check_text("--eval", config.eval, config.seqlen)
        except InputError as error:
            problems["eval"] = str(error)
    return problems


NUMBER_CHECKERS: dict[str, Callable[[str], Check]] = {
    **{name: (lambda text, name=name: check_float(name, text)) for name in FLOAT_FIELDS},
    **{name: (lambda text, name=name: check_int(name, text)) for name in INT_FIELDS},
    "pattern": check_pattern,
}
"""Checker per typed field (except the model and text sources, which need the catalog)."""
