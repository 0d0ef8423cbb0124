"""Texts for calibration and evaluation, and the token batches cut from them (ALGORITHM.md §6-7).

* :func:`load_text` turns a text spec into ``(name, text)``: the built-in corpora (``sotu`` for
  calibration, ``moby-dick`` for evaluation, both shipped xz-compressed in ``solver/io/corpora``),
  a local UTF-8 ``.txt`` or ``.jsonl`` file, or ``wikitext2`` / ``c4`` through ``datasets``
  (which needs the hub or a local datasets cache; offline it fails in seconds).
* :func:`calibration_batch` draws seeded random windows of tokens without tokenising the whole
  corpus; :func:`eval_windows` takes the first non-overlapping windows of a text, and
  :func:`eval_protocol` records how, so that every perplexity comes with its protocol.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import random
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from solver.errors import InputError
from solver.io.models import hub_reachable

__all__ = [
    "BUILTIN_TEXTS",
    "HUB_TEXTS",
    "calibration_batch",
    "eval_protocol",
    "eval_windows",
    "load_text",
]

BUILTIN_TEXTS: dict[str, str] = {
    "sotu": "State of the Union addresses 1790-2021 (10.8 MB, public domain): calibration",
    "moby-dick": "Herman Melville, Moby-Dick (1.2 MB, public domain): evaluation",
}

HUB_TEXTS: dict[str, str] = {
    "wikitext2": "WikiText-2 raw, test split (needs the hub or a datasets cache)",
    "c4": "C4 English, validation shard 0 (needs the hub or a datasets cache)",
}

CORPORA = Path(__file__).resolve().parent / "corpora"
_BUILTIN_FILES = {"sotu": "sotu.txt.xz", "moby-dick": "moby_dick.txt.xz"}
_ALIASES = {
    "moby_dick": "moby-dick",
    "mobydick": "moby-dick",
    "wikitext-2": "wikitext2",
    "wikitext": "wikitext2",
    "wikitext2-test": "wikitext2",
}


def is_named_text(spec: str) -> bool:
    """True for a built-in or dataset name (``sotu``, ``moby-dick``, ``wikitext2``, ``c4``...)."""
    key = str(spec).strip().lower()
    key = _ALIASES.get(key, key)
    return key in BUILTIN_TEXTS or key in HUB_TEXTS


_TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".md", ".xz", ".gz", ".text")

CHARS_PER_TOKEN_CHUNK = 12  # characters tokenised per wanted token when sampling a window
FULL_TOKENIZE_FACTOR = 1  # tokenise the whole text when it is shorter than all chunks together
EVAL_MARGIN_TOKENS = 64  # tokens past the last window that must exist, so a cut prefix is safe


# --------------------------------------------------------------------------------------------
# texts


def load_text(spec: str) -> tuple[str, str]:
    """Load a text by built-in name, file path or dataset name.

    Args:
        spec: ``sotu``, ``moby-dick``, ``wikitext2``, ``c4``, or a path to a UTF-8 ``.txt`` file
            or a ``.jsonl`` file with one JSON object per line holding a ``"text"`` string
            (``.xz`` / ``.gz`` compressed files are read too).

    Returns:
        ``(name, text)``: the readable name (the built-in name, or the file's name) and the text.

    Raises:
        InputError: the file is missing, empty, binary or not UTF-8; a ``.jsonl`` line is not a
            JSON object with ``"text"``; the name is unknown; a dataset is not reachable offline.
    """
    text = str(spec).strip()
    if not text:
        raise InputError(f"no text given: use one of {_known_names()} or a .txt / .jsonl file")
    key = _ALIASES.get(text.lower(), text.lower())
    if key in _BUILTIN_FILES:
        return key, _builtin_text(key)
    path = Path(text).expanduser()
    if path.exists():
        return path.name, _read_file(path)
    if key in HUB_TEXTS:
        return key, _hub_text(key)
    if _looks_like_path(text):
        raise InputError(f"text file '{text}' does not exist: check the path")
    raise InputError(f"unknown text '{text}': use one of {_known_names()} or a .txt / .jsonl file")


@lru_cache(maxsize=2)
def _builtin_text(name: str) -> str:
    """A built-in corpus, decompressed (cached: the strings are immutable)."""
    path = CORPORA / _BUILTIN_FILES[name]
    try:
        return lzma.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise InputError(
            f"the built-in text '{name}' is missing or damaged ({err}): reinstall duogpt-tui"
        ) from err


def _read_file(path: Path) -> str:
    shown = str(path)
    if path.is_dir():
        raise InputError(f"'{shown}' is a folder, not a text file: pass a .txt or .jsonl file")
    try:
        data = path.read_bytes()
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] == ".xz":
            data, suffixes = lzma.decompress(data), suffixes[:-1]
        elif suffixes and suffixes[-1] == ".gz":
            data, suffixes = gzip.decompress(data), suffixes[:-1]
    except (OSError, lzma.LZMAError, EOFError) as err:
        raise InputError(
            f"cannot read '{shown}' ({err}): check the file and its permissions"
        ) from err
    if not data.strip():
        raise InputError(f"text file '{shown}' is empty: pass a file with text in it")
    if b"\x00" in data:
        raise InputError(
            f"'{shown}' looks binary (it contains NUL bytes): pass a UTF-8 .txt or .jsonl file"
        )
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"'{shown}' is not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}): "
            f"re-encode it, e.g. `iconv -f latin1 -t utf-8 '{shown}' > text.txt`"
        ) from err
    if suffixes and suffixes[-1] == ".jsonl":
        decoded = _jsonl_text(decoded, shown)
    if not decoded.strip():
        raise InputError(f"text file '{shown}' has no text: pass a file with text in it")
    return decoded


def _jsonl_text(content: str, shown: str) -> str:
    """Join the ``"text"`` fields of a JSON-lines file with blank lines."""
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"line {number} of '{shown}' is not valid JSON ({err.msg}): each line must be a "
                'JSON object with a "text" field'
            ) from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(
                f"line {number} of '{shown}' has no \"text\" string field: each line must be a "
                'JSON object like {"text": "..."}'
            )
        texts.append(record["text"])
    return "\n\n".join(texts)


def _hub_text(name: str) -> str:
    """WikiText-2 (test) or C4 (en, validation shard 0) through ``datasets``."""
    online = hub_reachable()
    try:
        with _datasets_offline(not online), _quiet_datasets():
            import datasets

            if name == "wikitext2":
                rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
            else:
                rows = datasets.load_dataset(
                    "allenai/c4",
                    data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                    split="validation",
                )
            text = "\n\n".join(rows["text"])
    except Exception as err:
        if isinstance(err, MemoryError):
            raise
        if not online:
            raise InputError(
                f"text '{name}' is not in the local datasets cache and the hub cannot be reached: "
                "connect to the internet, or use sotu / moby-dick or a local .txt / .jsonl file"
            ) from err
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise InputError(
            f"cannot load the dataset '{name}' ({first}): check your connection, or use a "
            "local .txt / .jsonl file"
        ) from err
    if not text.strip():
        raise InputError(f"the dataset '{name}' came back empty: use another text")
    return text


@contextlib.contextmanager
def _datasets_offline(offline: bool) -> Iterator[None]:
    """Put ``datasets`` and the hub client in offline mode for the duration (cache only)."""
    if not offline:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    import datasets

    verbosity = datasets.logging.get_verbosity()
    bars_on = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_on:
            datasets.enable_progress_bars()


def _known_names() -> str:
    return ", ".join([*BUILTIN_TEXTS, *HUB_TEXTS])


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or "\\" in text
        or text.startswith((".", "~"))
        or text.lower().endswith(_TEXT_SUFFIXES)
    )


# --------------------------------------------------------------------------------------------
# tokens


def calibration_batch(
    tokenizer: Any,
    text: str,
    nsamples: int,
    seqlen: int,
    seed: int,
    *,
    name: str = "text",
) -> torch.Tensor:
    """Seeded random windows of ``seqlen`` consecutive tokens from a text.

    Large texts are never tokenised whole: each sample tokenises a chunk of about
    ``seqlen * 12`` characters at a seeded random character offset (a bigger one if that gives
    too few tokens), drops the chunk's first token (it may be a cut word) and keeps the next
    ``seqlen``. Texts shorter than all the chunks together are tokenised whole instead (that is
    cheaper) and sampled at seeded random token offsets. No special tokens are added.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the calibration text.
        nsamples: how many windows.
        seqlen: tokens per window.
        seed: the same seed gives the same batch.
        name: the text's name, for error messages.

    Returns:
        ``[nsamples, seqlen]`` token ids (int64).

    Raises:
        InputError: non-positive sizes, or the text has fewer than ``nsamples * seqlen`` tokens.
    """
    _check_positive("--nsamples", nsamples)
    _check_positive("--seqlen", seqlen)
    rng = random.Random(seed)
    chunk = seqlen * CHARS_PER_TOKEN_CHUNK
    if len(text) >= FULL_TOKENIZE_FACTOR * nsamples * chunk:
        rows = [
            _window_at_random_offset(tokenizer, text, seqlen, chunk, rng) for _ in range(nsamples)
        ]
        if all(row is not None for row in rows):
            return torch.tensor(rows, dtype=torch.long)
    tokens = _encode(tokenizer, text)
    need = nsamples * seqlen
    if len(tokens) < need:
        raise InputError(
            f"calibration text '{name}' has only {len(tokens)} tokens, fewer than nsamples x "
            f"seqlen = {nsamples} x {seqlen} = {need}; use a longer text or fewer --nsamples / "
            "a shorter --seqlen"
        )
    rng = random.Random(seed)
    starts = [rng.randrange(len(tokens) - seqlen + 1) for _ in range(nsamples)]
    return torch.tensor([tokens[s : s + seqlen] for s in starts], dtype=torch.long)


def _window_at_random_offset(
    tokenizer: Any, text: str, seqlen: int, chunk: int, rng: random.Random
) -> list[int] | None:
    """``seqlen`` tokens from a chunk at a random offset; None when no chunk gives enough."""
    offset = rng.randrange(len(text) - chunk + 1)
    size = chunk
    while True:
        piece = text[offset : offset + size]
        tokens = _encode(tokenizer, piece)
        if len(tokens) >= seqlen + 2:  # skip the first (maybe cut) token, keep a spare at the end
            return tokens[1 : seqlen + 1]
        if offset + size >= len(text) and offset == 0:
            return None
        size *= 2
        offset = min(offset, max(0, len(text) - size))


def eval_windows(
    tokenizer: Any, text: str, windows: int, seqlen: int, *, name: str = "text"
) -> torch.Tensor:
    """The first ``windows`` non-overlapping windows of ``seqlen`` tokens of a text.

    Only as much of the text's beginning is tokenised as the windows need (plus a margin, so the
    cut at the end of the prefix cannot change the tokens kept). No BOS or other special tokens.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the evaluation text.
        windows: how many windows are wanted (0 gives an empty ``[0, seqlen]`` tensor).
        seqlen: tokens per window.
        name: the text's name, for error messages.

    Returns:
        ``[W, seqlen]`` token ids (int64) with ``W <= windows``: fewer when the text is short
        (the caller records the count, see :func:`eval_protocol`).

    Raises:
        InputError: negative sizes, or the text has fewer tokens than one window.
    """
    if not isinstance(windows, int) or windows < 0:
        raise InputError(f"--eval-windows must be an integer >= 0, got {windows!r}")
    _check_positive("--seqlen", seqlen)
    if windows == 0:
        return torch.empty((0, seqlen), dtype=torch.long)
    need = windows * seqlen
    size = max(1024, need * 6)
    while True:
        whole = size >= len(text)
        tokens = _encode(tokenizer, text if whole else text[:size])
        if whole or len(tokens) >= need + EVAL_MARGIN_TOKENS:
            break
        size *= 2
    count = min(windows, len(tokens) // seqlen)
    if count == 0:
        raise InputError(
            f"evaluation text '{name}' has only {len(tokens)} tokens, fewer than one window of "
            f"--seqlen {seqlen}: use a longer text or a shorter --seqlen"
        )
    return torch.tensor(tokens[: count * seqlen], dtype=torch.long).view(count, seqlen)


def eval_protocol(name: str, windows: torch.Tensor, tokenizer: Any) -> dict[str, Any]:
    """How an evaluation was cut, to be recorded with every perplexity (ALGORITHM.md §7).

    Args:
        name: the text's name.
        windows: the ``[W, S]`` windows from :func:`eval_windows`.
        tokenizer: the tokenizer that cut them.

    Returns:
        ``{"text", "windows", "seqlen", "tokens", "bos", "tokenizer", "overlap"}``.
    """
    count, seqlen = (int(d) for d in windows.shape)
    return {
        "text": name,
        "windows": count,
        "seqlen": seqlen,
        "tokens": count * seqlen,
        "bos": False,
        "tokenizer": _tokenizer_label(tokenizer),
        "overlap": 0,
    }


def _tokenizer_label(tokenizer: Any) -> str:
    """``<name> (<class>, vocab <n>)``: enough to tell two tokenizers apart in a report."""
    source = str(getattr(tokenizer, "name_or_path", "") or "")
    if source and Path(source).is_absolute():
        source = Path(source).name
    kind = type(tokenizer).__name__
    try:
        vocab = f", vocab {len(tokenizer)}"
    except TypeError:
        vocab = ""
    return f"{source} ({kind}{vocab})" if source else f"{kind}{vocab}"


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _check_positive(flag: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{flag} must be an integer >= 1, got {value!r}")
