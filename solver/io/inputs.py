"""Cheap checks of the user's model and text files, before a run directory is made.

ARCHITECTURE.md, "Rules of the house": bad input gets one actionable line and never leaves a
half-written run directory. Loading a model takes seconds to minutes, so :func:`check_model` looks
only at what is cheap to read — a folder's ``config.json`` (is it a causal LM? how long is its
context?), the headers of its safetensors files (are they complete?), a GGUF file's header and
tensor table (is it truncated?), the hub cache (is a hub id usable offline?) — and returns the
model's sizes (:class:`ModelFacts`) for the pre-flight estimate (:mod:`solver.run.estimate`).
Given a layout check, :func:`check_model` also builds the model from that config alone on the
``meta`` device (:func:`config_skeleton`, no weight read) and runs the check on it, before it
looks at the weights (:mod:`solver.run.input_checks` passes discovery's block-list check).
:func:`check_text` reads a text file the way the run will and checks that it can hold the
calibration batch. Whatever passes here is loaded for real by :mod:`solver.io.models` and
:mod:`solver.io.data`, which raise the same kind of :class:`~solver.errors.InputError` for anything
these checks cannot see.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from solver.errors import InputError

if TYPE_CHECKING:
    from torch import nn

MAX_TEXT_CHECK_BYTES = 64 * 2**20
"""Text files larger than this are checked by the run itself (reading them twice costs)."""

MAX_SAFETENSORS_HEADER = 100 * 2**20
"""A safetensors header longer than this is corrupt (real headers are kilobytes)."""

LayoutCheck = Callable[["nn.Module"], object]
"""A check of a model's module tree (built on the ``meta`` device); raises InputError."""


@dataclass(frozen=True)
class ModelFacts:
    """The sizes of a decoder-only model, as far as they are known without loading it.

    Attributes:
        hidden: hidden size ``h``.
        layers: decoder blocks.
        intermediate: MLP size ``i``.
        vocab: vocabulary size.
        kv_dim: width of the key/value projections (``h`` without grouped-query attention).
        context: the longest sequence the model takes (``max_position_embeddings``).
        n_params: all parameters (counted from the tensors, else from the sizes).
        tied: whether the output head shares the embedding's weights.
    """

    hidden: int | None = None
    layers: int | None = None
    intermediate: int | None = None
    vocab: int | None = None
    kv_dim: int | None = None
    context: int | None = None
    n_params: int | None = None
    tied: bool = False

    @property
    def params(self) -> int | None:
        """``n_params``, else the LLaMA-shaped count from the sizes (norms ignored)."""
        if self.n_params is not None:
            return self.n_params
        h, i, n = self.hidden, self.intermediate, self.layers
        if h is None or i is None or n is None:
            return None
        kv = self.kv_dim or h
        block = 2 * h * h + 2 * kv * h + 3 * h * i
        embed = (self.vocab or 0) * h
        return n * block + embed * (1 if self.tied else 2)


BUILTIN_FACTS = {
    "tiny-random": ModelFacts(
        hidden=64, layers=2, intermediate=128, vocab=260, kv_dim=32, context=1024, n_params=107_328
    ),
    "smollm2-135m": ModelFacts(
        hidden=576,
        layers=30,
        intermediate=1536,
        vocab=49152,
        kv_dim=192,
        context=8192,
        n_params=134_515_008,
        tied=True,
    ),
}
"""What is known of the built-in models (``solver.io.models.BUILTIN_MODELS``), unloaded."""


# --------------------------------------------------------------------------------------------
# models


def check_model(
    spec: str, seqlen: int | None = None, check_layout: LayoutCheck | None = None
) -> ModelFacts:
    """Check a model spec cheaply and return what is known of its sizes.

    Args:
        spec: a built-in name, a local folder, a ``.gguf`` file or a hub id.
        seqlen: the run's ``--seqlen``, checked against the model's context when it is known.
        check_layout: run on the model's skeleton (:func:`config_skeleton`) right after its
            config is read, before its weights are looked at; not for the built-in models
            (their layout is known) nor for a hub id that is not cached.

    Returns:
        The model's sizes; fields stay ``None`` where they cannot be read cheaply.

    Raises:
        InputError: the folder is not a causal LM, its weights are truncated or corrupt, the
            GGUF file is damaged, a hub id is not cached and the hub cannot be reached,
            ``check_layout`` refuses the model, or ``seqlen`` is longer than the model's
            context.
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if text.lower() in BUILTIN_FACTS:
        facts = BUILTIN_FACTS[text.lower()]
    elif path.is_dir():
        facts = _check_folder(path, check_layout)
    elif path.is_file() and path.suffix.lower() == ".gguf":
        facts = _check_gguf(path, check_layout)
    elif path.exists():
        raise InputError(
            f"'{text}' is a file but not a .gguf file: pass the folder that holds config.json, "
            "or a .gguf file"
        )
    else:
        _check_not_a_missing_path(text)
        facts = _check_hub_id(text, check_layout)
    if seqlen is not None and facts.context and seqlen > facts.context:
        raise InputError(
            f"--seqlen {seqlen} is longer than the model's context of {facts.context} tokens: "
            f"use --seqlen {facts.context} or less"
        )
    return facts


def model_facts(spec: str) -> ModelFacts:
    """What is known of a model's sizes from its files alone (unknown sizes stay ``None``).

    Never raises, never imports transformers and never reaches the network (a hub id counts
    only when it is in the local cache).
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    try:
        if text.lower() in BUILTIN_FACTS:
            return BUILTIN_FACTS[text.lower()]
        if path.is_dir():
            data = json.loads((path / "config.json").read_text(encoding="utf-8"))
            return _facts_from_config(data, None)
        if path.is_file() and path.suffix.lower() == ".gguf":
            return _check_gguf(path, None)
        if not path.exists():
            data = _cached_hub_config(text)
            return _facts_from_config(data, None) if data is not None else ModelFacts()
    except Exception:  # an estimate must never stop a run
        pass
    return ModelFacts()


def _check_folder(path: Path, check_layout: LayoutCheck | None) -> ModelFacts:
    """A Hugging Face model folder: config, causal LM, layout, tokenizer files, weights."""
    from solver.io.models import TOKENIZER_FILES, check_causal, require_model_folder

    require_model_folder(path)
    config_path = path / "config.json"
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot read the model config in '{path}' ({_reason(err)}): the folder must "
            "hold a Hugging Face config.json of a supported model type"
        ) from err
    check_causal(SimpleNamespace(**data), str(path))
    _check_skeleton(data, check_layout)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"'{path}' has no tokenizer files: save the tokenizer next to the model "
            "(tokenizer.save_pretrained) or pass a folder that has one"
        )
    n_params = _check_weights(path)
    return _facts_from_config(data, n_params)


def _check_weights(path: Path) -> int | None:
    """Check the folder's safetensors files are complete; return their parameter count."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise _weights_error(path, f"{index.name} is unreadable: {_reason(err)}") from err
        files = [path / name for name in names]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
            return None  # PyTorch pickles: checked when they load
        raise _weights_error(path, "no weight files")
    total = 0
    for file in files:
        if not file.is_file():
            raise _weights_error(path, f"{file.name} is missing")
        problem, count = _safetensors_problem(file)
        if problem:
            raise _weights_error(path, problem)
        total += count
    return total


def _weights_error(path: Path, problem: str) -> InputError:
    return InputError(
        f"cannot load the weights in '{path}' ({problem}): the files are missing, corrupt or "
        "truncated; save or download the model again"
    )


def _safetensors_problem(file: Path) -> tuple[str, int]:
    """``(problem, parameter count)``: problem is "" for a complete safetensors file."""
    size = file.stat().st_size
    with file.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            return f"{file.name} is shorter than a safetensors header", 0
        length = int.from_bytes(head, "little")
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            return f"{file.name} has no valid safetensors header", 0
        try:
            header = json.loads(stream.read(length))
            tensors = [v for k, v in header.items() if k != "__metadata__"]
            end = max((int(t["data_offsets"][1]) for t in tensors), default=0)
            count = sum(math.prod(int(d) for d in t["shape"]) for t in tensors)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return f"{file.name} has no valid safetensors header", 0
    if 8 + length + end > size:
        return f"{file.name} is truncated: {size} of {8 + length + end} bytes", 0
    return "", count


def _facts_from_config(data: dict[str, Any], n_params: int | None) -> ModelFacts:
    """Sizes from a Hugging Face ``config.json`` (``text_config`` for multimodal configs)."""
    if "hidden_size" not in data and isinstance(data.get("text_config"), dict):
        data = data["text_config"]

    def number(*keys: str) -> int | None:
        for key in keys:
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    hidden = number("hidden_size", "n_embd", "d_model")
    heads = number("num_attention_heads", "n_head")
    kv_heads = number("num_key_value_heads") or heads
    kv_dim = hidden * kv_heads // heads if hidden and heads and kv_heads else hidden
    return ModelFacts(
        hidden=hidden,
        layers=number("num_hidden_layers", "n_layer"),
        intermediate=number("intermediate_size", "n_inner") or (4 * hidden if hidden else None),
        vocab=number("vocab_size"),
        kv_dim=kv_dim,
        context=number("max_position_embeddings", "n_positions"),
        n_params=n_params or None,
        tied=bool(data.get("tie_word_embeddings", False)),
    )


def _check_hub_id(spec: str, check_layout: LayoutCheck | None) -> ModelFacts:
    """A hub id: usable when cached, or when the hub can be reached (it is then downloaded)."""
    from solver.io.models import BUILTIN_MODELS, check_causal, hub_reachable

    data = _cached_hub_config(spec)
    if data is not None:
        if data:
            check_causal(SimpleNamespace(**data), spec)
            _check_skeleton(data, check_layout)
        return _facts_from_config(data, None)
    if not hub_reachable():
        builtin = f" or a built-in model ({', '.join(BUILTIN_MODELS)})" if "/" not in spec else ""
        raise InputError(
            f"model '{spec}' is not in the local cache and the hub cannot be reached: "
            f"connect to the internet or pass a local directory / .gguf file{builtin}"
        )
    return ModelFacts()


def _cached_hub_config(spec: str) -> dict[str, Any] | None:
    """The ``config.json`` of a hub id from the local hub cache (None when not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id=spec, filename="config.json")
        if isinstance(cached, str):
            data = json.loads(Path(cached).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
    except Exception:  # a malformed id or an unreadable cache: the loader says precisely
        pass
    return None


# --------------------------------------------------------------------------------------------
# the model's skeleton, for the layout check


def _check_skeleton(data: dict[str, Any] | None, check_layout: LayoutCheck | None) -> None:
    """Run ``check_layout`` on the skeleton of the model ``data`` configures, when one builds."""
    if check_layout is None or not isinstance(data, dict):
        return
    skeleton = config_skeleton(data)
    if skeleton is not None:
        check_layout(skeleton)


def config_skeleton(data: dict[str, Any]) -> nn.Module | None:
    """The causal LM a ``config.json`` describes, built on the ``meta`` device: no weights.

    Skeletons are cached by their config, so the setup screen's repeated pre-flights build
    each one once.

    Args:
        data: a Hugging Face config as a dict (``model_type`` and the sizes).

    Returns:
        The skeleton, or None when transformers cannot build the model from the config alone
        (the loader then says what is wrong).
    """
    if not isinstance(data.get("model_type"), str):
        return None
    return _build_skeleton(json.dumps(data, sort_keys=True, default=str))


@functools.lru_cache(maxsize=4)
def _build_skeleton(config_json: str) -> nn.Module | None:
    """``AutoModelForCausalLM.from_config`` on the ``meta`` device (None when it fails)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from solver.io.models import quiet_transformers

    data = json.loads(config_json)
    try:
        with quiet_transformers():
            config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
            with torch.device("meta"):
                model: nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                    config
                )
    except MemoryError:
        raise
    except Exception:  # a config transformers cannot build alone: the loader says why
        return None
    return model


def _gguf_config(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """A transformers config (as a dict) from GGUF metadata, for :func:`config_skeleton`.

    The scalar values transformers maps (``GGUF_CONFIG_MAPPING``: block count, widths, heads,
    context) under the architecture's transformers model type; arrays (per-layer values) are
    left to the config's defaults. Enough to build the model's module tree, not to load it.
    """
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    from solver.io.models import gguf_model_type

    architecture = str(metadata.get("general.architecture", ""))
    family = gguf_model_type(architecture)
    mappings = cast(dict[str, dict[str, Any]], GGUF_CONFIG_MAPPING)
    mapping = mappings.get(family) or mappings.get(architecture) or {}
    if not architecture or not mapping:
        return None
    data: dict[str, Any] = {"model_type": family, **GGUF_CONFIG_DEFAULTS_MAPPING.get(family, {})}
    prefix = f"{architecture}."
    for key, value in metadata.items():
        if not key.startswith(prefix) or isinstance(value, _ArrayLength):
            continue
        name = mapping.get(key.removeprefix(prefix))
        if isinstance(name, str):
            data[name] = value
    tokens = metadata.get("tokenizer.ggml.tokens")
    if "vocab_size" not in data and isinstance(tokens, int) and tokens > 0:
        data["vocab_size"] = int(tokens)
    return data


# --------------------------------------------------------------------------------------------
# GGUF files (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
#
# Read by hand rather than with ``gguf.GGUFReader``: the library maps every metadata array (the
# whole vocabulary) and every tensor into numpy views, 72-91x slower for the same answer
# (benchmarks/gguf_header.py: 31 ms against 2.9 s on the default model's file, 113 ms against
# 8.1 s on Qwen2.5-Coder-0.5B, the same parameter counts). The pre-flight runs again after each
# edit of the setup form, so it stays here; the conversion (solver.io.models, through transformers)
# uses the library, where it reads everything anyway.

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _Truncated(Exception):
    """The GGUF header ends before it should."""


class _ArrayLength(int):
    """A GGUF metadata array, recorded by its element count only."""


def _check_gguf(path: Path, check_layout: LayoutCheck | None) -> ModelFacts:
    """Read a GGUF file's header and tensor table; refuse it when damaged or truncated, when
    its architecture cannot be loaded as a decoder-only LM, or when ``check_layout`` refuses
    the model its metadata describes."""
    from solver.io.models import check_gguf_architecture

    try:
        metadata, n_params, needed = _read_gguf_header(path)
    except _Truncated:
        problem = "truncated header"
    except (ValueError, KeyError, UnicodeDecodeError, struct.error, OverflowError) as err:
        problem = _reason(err)
    else:
        size = path.stat().st_size
        if size >= needed:
            arch = str(metadata.get("general.architecture", ""))
            check_gguf_architecture(arch, str(path))
            _check_skeleton(_gguf_config(metadata), check_layout)

            def get(key: str) -> int | None:
                value = metadata.get(f"{arch}.{key}")
                return int(value) if isinstance(value, int) else None

            hidden, heads = get("embedding_length"), get("attention.head_count")
            kv_heads = get("attention.head_count_kv") or heads
            return ModelFacts(
                hidden=hidden,
                layers=get("block_count"),
                intermediate=get("feed_forward_length"),
                vocab=int(metadata.get("tokenizer.ggml.tokens") or 0) or None,
                kv_dim=hidden * kv_heads // heads if hidden and heads and kv_heads else hidden,
                context=get("context_length"),
                n_params=n_params,
            )
        problem = f"truncated: {size} of {needed} bytes"
    raise InputError(
        f"cannot read the GGUF file '{path}' ({problem}): the file is corrupt, truncated or of "
        "an unsupported architecture; download it again"
    )


def _read_gguf_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """``(metadata, parameter count, bytes the file must have)`` from a GGUF header.

    String arrays are recorded by their length only (the vocabulary is not decoded).
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with path.open("rb") as stream:
        if stream.read(4) != b"GGUF":
            raise ValueError("not a GGUF file: bad magic bytes")
        version = _unpack(stream, "<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = _unpack(stream, "<Q"), _unpack(stream, "<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ValueError("implausible header counts")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_string(stream).decode("utf-8")
            metadata[key] = _read_value(stream, _unpack(stream, "<I"))
        tensors = []
        for _ in range(n_tensors):
            _read_string(stream)
            dims = [_unpack(stream, "<Q") for _ in range(_unpack(stream, "<I"))]
            kind, offset = _unpack(stream, "<I"), _unpack(stream, "<Q")
            tensors.append((dims, kind, offset))
        alignment = int(metadata.get("general.alignment", 32)) or 32
        start = -(-stream.tell() // alignment) * alignment
    n_params, end = 0, 0
    for dims, kind, offset in tensors:
        count = math.prod(dims)
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        n_params += count
        end = max(end, offset + count // block * type_size)
    return metadata, n_params, start + end


def _unpack(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) < size:
        raise _Truncated
    return struct.unpack(fmt, data)[0]


def _read_string(stream: BinaryIO) -> bytes:
    length = _unpack(stream, "<Q")
    if length > 2**24:
        raise ValueError("implausible string length")
    data = stream.read(length)
    if len(data) < length:
        raise _Truncated
    return data


def _read_value(stream: BinaryIO, kind: int) -> Any:
    """One metadata value; an array becomes its element count (:class:`_ArrayLength`)."""
    if kind in _GGUF_SCALARS:
        return _unpack(stream, _GGUF_SCALARS[kind])
    if kind == _GGUF_STRING:
        return _read_string(stream).decode("utf-8", errors="replace")
    if kind == _GGUF_ARRAY:
        item, count = _unpack(stream, "<I"), _unpack(stream, "<Q")
        if item in _GGUF_SCALARS:
            stream.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, 1)
        elif item == _GGUF_STRING:
            for _ in range(count):
                stream.seek(_unpack(stream, "<Q"), 1)
        else:
            for _ in range(count):
                _read_value(stream, item)
        return _ArrayLength(count)
    raise ValueError(f"unknown GGUF value type {kind}")


# --------------------------------------------------------------------------------------------
# texts


def _check_not_a_missing_path(spec: str) -> None:
    """Refuse a spec that is neither a built-in, an existing path nor shaped like ``org/name``."""
    from solver.io.models import BUILTIN_MODELS, looks_like_path

    if looks_like_path(spec) or spec.count("/") != 1:
        raise InputError(
            f"model {spec!r} not found: give a built-in name ({', '.join(BUILTIN_MODELS)}), "
            "a local model directory, a .gguf file or a hub id like org/name"
        )


def check_text(flag: str, spec: str, need_tokens: int, length_flag: str = "--seqlen") -> None:
    """Read a text file as the run will, and check it can hold ``need_tokens`` tokens.

    Built-in and dataset names are left to the run. Every token covers at least one byte, so a
    file with fewer UTF-8 bytes than ``need_tokens`` is too short for any tokenizer; a longer
    one may still be short for a given tokenizer, which the run then reports.

    Args:
        flag: ``--calib`` or ``--eval``, for the message.
        spec: the text spec.
        need_tokens: ``nsamples x seqlen`` for calibration, one window for evaluation.
        length_flag: the option that sets the window length (``--seqlen``, or
            ``--eval-seqlen`` when that sets the evaluation windows), for the message.

    Raises:
        InputError: the file is missing, a folder, empty, binary, not UTF-8, a bad ``.jsonl``,
            or shorter than ``need_tokens`` bytes.
    """
    from solver.io.data import BUILTIN_TEXTS, is_named_text, load_text

    if is_named_text(spec):
        return
    path = Path(str(spec).strip()).expanduser()
    if not path.is_file():
        raise InputError(
            f"{flag} {spec!r} is not a file: give a built-in text ({', '.join(BUILTIN_TEXTS)}), "
            "wikitext2, c4, or a .txt / .jsonl file"
        )
    if path.stat().st_size > MAX_TEXT_CHECK_BYTES:
        return
    name, text = load_text(str(spec))
    size = len(text.encode("utf-8"))
    if size < need_tokens:
        what, fix = (
            ("nsamples x seqlen", "fewer --nsamples or a shorter --seqlen")
            if flag == "--calib"
            else (f"one window of {length_flag}", f"a shorter {length_flag}")
        )
        raise InputError(
            f"{flag} text '{name}' has only {size} bytes, fewer than the {need_tokens} tokens "
            f"of {what}: use a longer text, {fix}"
        )


def _reason(err: BaseException) -> str:
    """The first line of an exception's message, short."""
    lines = str(err).strip().splitlines()
    line = lines[0].strip().rstrip(".:") if lines else ""
    line = line or type(err).__name__
    return line if len(line) <= 120 else line[:117] + "..."
