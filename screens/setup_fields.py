"""The setup form's fields and their validation, from the option registry (no Textual here).

The form shows the options of ``solver.config.OPTIONS`` that declare a
:class:`~solver.options.FormField`, sorted by its row; the field's kind says which widget it
gets (:func:`field_kind`); an option with suggestions (the weight pattern) is a list of presets
plus ``custom``, which reveals a text field (:func:`check_preset`). Two stages of checks. As
you type, each field's text gives ``(value, problem, hint)``: the parsed value, the one-line
reason it is invalid (empty when valid) and a muted hint to show when it is valid. Values are
parsed by :meth:`solver.options.Option.parse` and checked by
:meth:`solver.options.Option.validate`, the same as ``duogpt prune`` does, so the form and the
CLI agree on every rule and every message; a model or text spec is only checked for its shape
and existence here (and a local model folder's family read from its ``config.json``). Then, on
a worker a moment after the last change, :func:`inspect_inputs` runs the pre-flight's own file
and machine checks (:data:`solver.run.input_checks.INPUT_CHECKS`) and says which field each
problem belongs to.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from solver.config import OPTION, RunConfig, options_on, parse_pattern
from solver.errors import InputError
from solver.options import FormField, Option, Surface
from solver.run.input_checks import INPUT_CHECKS

Check = tuple[Any, str, str]
"""``(value, problem, hint)`` from a field checker."""

FORM: tuple[Option, ...] = tuple(
    sorted(options_on(Surface.SETUP), key=lambda spec: spec.form.row if spec.form else 0)
)
"""The options on the form, in form order (the first problem in this order is the one start
reports)."""

FIELDS = tuple(spec.name for spec in FORM)
"""Every field, in form order."""


def form_field(name: str) -> FormField:
    """How option ``name`` appears on the form."""
    form = OPTION[name].form
    assert form is not None, name
    return form


def field_kind(spec: Option) -> str:
    """The widget an option gets: ``source`` (a model or text: quick-pick list, typed spec and
    browse button), ``select`` (a list), ``preset`` (a list of the suggested values plus
    ``custom``, which reveals a text field), ``toggle`` (a checkbox and a number) or ``input``."""
    form = spec.form
    assert form is not None, spec.name
    if form.picker in ("models", "texts"):
        return "source"
    if spec.choices or form.picker:
        return "select"
    if form.suggestions:
        return "preset"
    return "toggle" if form.toggle else "input"


SOURCES = {spec.name: form_field(spec.name).label for spec in FORM if field_kind(spec) == "source"}
"""The fields picked from a list or typed as a path, with their labels."""

SELECTS = tuple(spec.name for spec in FORM if field_kind(spec) == "select")
"""The fields picked from a list."""

CUSTOM = "custom"
"""The value of a preset list's last entry, which reveals the text field."""

PRESETS = {
    spec.name: form_field(spec.name).suggestions for spec in FORM if field_kind(spec) == "preset"
}
"""The fields picked from presets or typed (``custom``), with their presets."""


def preset_choices(name: str) -> list[tuple[str, str]]:
    """What a preset list offers: ``(label, value)`` pairs, ``custom`` last."""
    return [*((value, value) for value in PRESETS[name]), ("custom…", CUSTOM)]


def preset_of(name: str, text: str) -> str:
    """The preset a typed value is (``custom`` when it is none of them)."""
    text = text.strip()
    return text if text in PRESETS[name] else CUSTOM


def _deep_inputs() -> dict[str, tuple[str, ...]]:
    """What each pre-flight check reads, by the field it blames."""
    reads = {check.field: check.reads for check in INPUT_CHECKS}
    reads["seqlen"] = reads["model"]  # the model check blames a --seqlen longer than the context
    return reads


DEEP_INPUTS = _deep_inputs()
"""For each field :func:`inspect_inputs` may blame, the fields its check reads: a problem found
for one config still holds while these fields keep their values."""


def config_problem(name: str, value: Any) -> str:
    """The reason the option ``name`` gives for ``value`` (empty if valid)."""
    try:
        OPTION[name].validate(value)
    except InputError as error:
        return str(error)
    return ""


PERCENT_FIELDS = frozenset({"weight_sparsity", "act_sparsity"})
"""Fractions that may be typed as a percentage (``50%`` is 0.5)."""


def check_typed(name: str, text: str) -> Check:
    """Parse and validate a typed field: a number (a sparsity also as ``50%``), or the weight
    pattern."""
    text = text.strip()
    if name in PERCENT_FIELDS and text.endswith("%"):
        try:
            value = float(text.removesuffix("%").strip()) / 100
        except ValueError:
            return None, f"{OPTION[name].flag} must be a fraction or a percentage, got {text!r}", ""
        return value, config_problem(name, value), f"{value:g} of the weights or inputs"
    try:
        value = OPTION[name].parse(text)
    except InputError as error:
        return None, str(error), ""
    if name == "pattern":
        return check_pattern(value)
    return value, config_problem(name, value), ""


def check_toggled(name: str, on: bool, text: str) -> Check:
    """A number switched on and off by a checkbox: 0 when off, else an integer >= 1."""
    if not on:
        return 0, "", "off"
    value, problem, _ = check_typed(name, text)
    if not problem and value < 1:
        problem = f"{OPTION[name].flag} must be an integer >= 1 (or switch it off)"
    return value, problem, "" if problem else form_field(name).hint


def check_preset(name: str, choice: object, text: str) -> Check:
    """A preset picked from the list, or (``custom``) the typed value, parsed and validated."""
    if choice != CUSTOM:
        return check_typed(name, str(choice))
    if not text.strip():
        form = form_field(name)
        return None, f"type a custom {form.label.lower()}: {form.placeholder}", ""
    return check_typed(name, text)


def check_pattern(text: str) -> Check:
    """``unstructured`` or ``N:M``, kept in that form."""
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
        family = model_family(path)
        return spec, "", f"local model folder · {family}" if family else "local model folder"
    if path.is_file():
        return spec, "", "GGUF file (dequantised on load)" if path.suffix == ".gguf" else ""
    from solver.io.models import looks_like_path

    if looks_like_path(spec) or spec.count("/") != 1:
        return None, f"{spec!r} not found: give a built-in name, a folder, a .gguf or org/name", ""
    return spec, "", "hub id: read from the Hugging Face cache, or downloaded when online"


def model_family(folder: Path) -> str:
    """The ``model_type`` in a model folder's ``config.json`` ("" without a readable one).

    Cheap enough for every keystroke: one small file read, cached while the file is unchanged
    (no torch, no transformers).
    """
    config = folder / "config.json"
    try:
        stamp = config.stat().st_mtime_ns
    except OSError:
        return ""
    return _family_in(str(config), stamp)


@lru_cache(maxsize=64)
def _family_in(config: str, stamp: int) -> str:
    """The ``model_type`` of one ``config.json`` as it was at ``stamp`` (:func:`model_family`)."""
    del stamp  # part of the cache key only
    try:
        data = json.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    family = data.get("model_type") if isinstance(data, dict) else None
    return family if isinstance(family, str) else ""


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

    Runs every check of :data:`~solver.run.input_checks.INPUT_CHECKS` (the ones
    ``solver.run.pipeline.preflight`` runs beyond ``RunConfig.validate``): the device, the
    model's files and context, the texts (the evaluation text against ``eval_len``). Slow
    (imports torch, reads files, may probe the hub for a hub id): call it on a worker.

    Returns:
        ``{field: one-line problem}``; empty when the inputs look usable.
    """
    problems: dict[str, str] = {}
    for check in INPUT_CHECKS:
        try:
            check.run(config)
        except InputError as error:
            blamed = check.field
            if check.field == "model" and str(error).startswith("--seqlen"):
                blamed = "seqlen"
            problems[blamed] = str(error)
    return problems
