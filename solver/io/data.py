"""Texts for calibration and evaluation, and the token batches cut from them (ALGORITHM.md §6-7).

* :func:`load_text` turns a text spec into ``(name, text)``: the built-in corpora (``sotu`` for
  calibration, ``moby-dick`` for evaluation, both shipped xz-compressed in ``solver/io/corpora``),
  a local UTF-8 ``.txt`` or ``.jsonl`` file, or ``wikitext2`` / ``c4`` through ``datasets``
  (which needs the hub or a local datasets cache; offline it fails in seconds).
* :func:`calibration_batch` draws seeded random windows of tokens without tokenising the whole
  corpus; :func:`eval_sample` cuts non-overlapping windows spread evenly over the held-out text
  (or its first windows) and records how (its ``protocol``), so that every perplexity comes
  with its protocol.
* :func:`held_out_cut`: when calibration and evaluation name the same text, calibration draws
  from its first part and evaluation from the rest, so they never share a token.
* BOS: when the tokenizer adds BOS by default (:func:`adds_bos`), every calibration sequence and
  every evaluation window starts with it, and ``--seqlen`` counts it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from solver.errors import InputError
from solver.io.models import hub_reachable

__all__ = [
    "BUILTIN_TEXTS",
    "HUB_TEXTS",
    "PLACEMENTS",
    "EvalSample",
    "adds_bos",
    "calibration_batch",
    "eval_sample",
    "eval_windows",
    "held_out_cut",
    "load_text",
    "text_sha256",
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
        with datasets_offline(not online), quiet_datasets():
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
def datasets_offline(offline: bool) -> Iterator[None]:
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
def quiet_datasets() -> Iterator[None]:
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
    bos: bool | None = None,
) -> torch.Tensor:
    """Seeded random windows of ``seqlen`` consecutive tokens from a text.

    Large texts are never tokenised whole: each sample tokenises a chunk of about
    ``seqlen * 12`` characters at a seeded random character offset (a bigger one if that gives
    too few tokens), drops the chunk's first token (it may be a cut word) and keeps the next
    ``seqlen``. Texts shorter than all the chunks together are tokenised whole instead (that is
    cheaper) and sampled at seeded random token offsets. When the tokenizer adds BOS by default
    (:func:`adds_bos`), each sequence is BOS followed by ``seqlen - 1`` text tokens (``seqlen``
    counts the BOS); otherwise no special tokens are added.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the calibration text.
        nsamples: how many windows.
        seqlen: tokens per window.
        seed: the same seed gives the same batch.
        name: the text's name, for error messages.
        bos: start each sequence with BOS; None: when the tokenizer adds it by default.

    Returns:
        ``[nsamples, seqlen]`` token ids (int64).

    Raises:
        InputError: non-positive sizes, or the text has fewer than ``nsamples * seqlen`` tokens.
    """
    _check_positive("--nsamples", nsamples)
    _check_positive("--seqlen", seqlen)
    with_bos = adds_bos(tokenizer) if bos is None else bool(bos)
    prefix = [int(tokenizer.bos_token_id)] if with_bos else []
    body = seqlen - len(prefix)  # text tokens per sequence
    if body < 1:
        raise InputError(f"--seqlen must be at least 2 with a BOS token, got {seqlen}")
    rng = random.Random(seed)
    chunk = body * CHARS_PER_TOKEN_CHUNK
    if len(text) >= FULL_TOKENIZE_FACTOR * nsamples * chunk:
        rows = [
            _window_at_random_offset(tokenizer, text, body, chunk, rng) for _ in range(nsamples)
        ]
        if all(row is not None for row in rows):
            return torch.tensor([prefix + row for row in rows if row is not None], dtype=torch.long)
    tokens = _encode(tokenizer, text)
    need = nsamples * body
    if len(tokens) < need:
        raise InputError(
            f"calibration text '{name}' has only {len(tokens)} tokens, fewer than nsamples x "
            f"{'(seqlen - 1 for BOS)' if prefix else 'seqlen'} = {nsamples} x {body} = {need}; "
            "use a longer text or fewer --nsamples / a shorter --seqlen"
        )
    rng = random.Random(seed)
    starts = [rng.randrange(len(tokens) - body + 1) for _ in range(nsamples)]
    return torch.tensor([prefix + tokens[s : s + body] for s in starts], dtype=torch.long)


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


PLACEMENTS = ("spread", "first")
"""Where the evaluation windows lie in the held-out text: evenly over all of it, or its start."""


@dataclass(frozen=True)
class EvalSample:
    """Evaluation windows and the protocol that cut them (recorded with every figure).

    Attributes:
        windows: ``[W, S]`` token ids (int64); each row starts with BOS when ``protocol["bos"]``.
        protocol: how the windows were cut (:func:`eval_sample` lists the keys).
    """

    windows: torch.Tensor
    protocol: dict[str, Any]


def eval_sample(
    tokenizer: Any,
    text: str,
    windows: int,
    seqlen: int,
    *,
    name: str = "text",
    placement: str = "spread",
    chars: tuple[int, int] | None = None,
    bos: bool | None = None,
) -> EvalSample:
    """Non-overlapping windows of ``seqlen`` tokens from the held-out part of a text.

    The held-out part (``text[chars[0]:chars[1]]``, all of it by default) is tokenised whole, so
    the windows are exact slices of its token sequence and their ``[start, end)`` token offsets
    are recorded. With ``placement="spread"`` the part is cut into ``W`` equal segments and each
    window is centred in its own segment, so the windows sample the whole text evenly; with
    ``"first"`` they are its first ``W`` windows, one after the other. When the tokenizer adds
    BOS by default, every window is BOS followed by ``seqlen - 1`` text tokens (``seqlen``
    counts the BOS); otherwise no special tokens are added.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the whole evaluation text (its SHA-256 is recorded).
        windows: how many windows are wanted (0 gives an empty ``[0, seqlen]`` tensor).
        seqlen: tokens per window.
        name: the text's name, for the protocol and error messages.
        placement: ``spread`` or ``first`` (:data:`PLACEMENTS`).
        chars: the held-out part, ``[start, end)`` in characters; None: the whole text.
        bos: start each window with BOS; None: when the tokenizer adds it by default.

    Returns:
        The windows (``W <= windows``: fewer when the part is short) and the protocol: ``text``,
        ``text_sha256``, ``chars``, ``text_tokens`` (the held-out part's length in tokens),
        ``placement``, ``windows``, ``seqlen``, ``tokens`` (all window tokens), ``token_spans``
        (each window's ``[start, end)`` text-token offsets in the held-out part, BOS excluded),
        ``bos``, ``tokenizer`` and ``overlap`` (0: the windows never share a token).

    Raises:
        InputError: bad sizes or placement, or the part has fewer tokens than one window.
    """
    if not isinstance(windows, int) or isinstance(windows, bool) or windows < 0:
        raise InputError(f"--eval-windows must be an integer >= 0, got {windows!r}")
    _check_positive("--seqlen", seqlen)
    if placement not in PLACEMENTS:
        raise InputError(
            f"unknown evaluation placement {placement!r}: use {' or '.join(PLACEMENTS)}"
        )
    with_bos = adds_bos(tokenizer) if bos is None else bool(bos)
    body = seqlen - 1 if with_bos else seqlen  # text tokens per window
    if body < 1:
        raise InputError(f"--seqlen must be at least 2 with a BOS token, got {seqlen}")
    start, end = chars if chars is not None else (0, len(text))
    tokens = _encode(tokenizer, text[start:end]) if windows > 0 else []
    count = min(windows, len(tokens) // body)
    if windows > 0 and count == 0:
        raise InputError(
            f"evaluation text '{name}' has only {len(tokens)} tokens, fewer than one window of "
            f"--seqlen {seqlen}: use a longer text or a shorter --seqlen"
        )
    starts = window_starts(len(tokens), count, body, placement)
    prefix = [int(tokenizer.bos_token_id)] if with_bos else []
    rows = [prefix + tokens[s : s + body] for s in starts]
    tensor = (
        torch.tensor(rows, dtype=torch.long) if rows else torch.empty((0, seqlen), dtype=torch.long)
    )
    protocol: dict[str, Any] = {
        "text": name,
        "text_sha256": text_sha256(text),
        "chars": [start, end],
        "text_tokens": len(tokens),
        "placement": placement,
        "windows": count,
        "seqlen": seqlen,
        "tokens": count * seqlen,
        "token_spans": [[s, s + body] for s in starts],
        "bos": with_bos,
        "tokenizer": _tokenizer_label(tokenizer),
        "overlap": 0,
    }
    return EvalSample(tensor, protocol)


def window_starts(total: int, count: int, length: int, placement: str) -> list[int]:
    """Start offsets of ``count`` non-overlapping windows of ``length`` in ``total`` tokens.

    ``first``: ``0, length, 2 * length...``. ``spread``: the tokens are cut into ``count``
    equal segments (each at least ``length`` long, since ``count * length <= total``) and each
    window is centred in its segment, so consecutive starts are at least ``length`` apart.
    """
    if count <= 0:
        return []
    if placement == "first":
        return [i * length for i in range(count)]
    starts = [(2 * i + 1) * total // (2 * count) - length // 2 for i in range(count)]
    return [min(max(0, s), total - length) for s in starts]


def eval_windows(
    tokenizer: Any, text: str, windows: int, seqlen: int, *, name: str = "text"
) -> torch.Tensor:
    """The first ``windows`` non-overlapping windows of ``seqlen`` tokens of a text.

    The ``first`` placement of :func:`eval_sample` (which also gives the protocol); BOS leads
    each window when the tokenizer adds it by default.

    Raises:
        InputError: negative sizes, or the text has fewer tokens than one window.
    """
    return eval_sample(tokenizer, text, windows, seqlen, name=name, placement="first").windows


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token in front of a text by default.

    Such models (Gemma, LLaMA-2...) are trained with it, and their perplexity is far worse
    without it, so calibration sequences and evaluation windows start with it.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    try:
        ids = list(tokenizer("a", verbose=False)["input_ids"])
    except (TypeError, KeyError):
        return False
    return bool(ids) and ids[0] == bos


def text_sha256(text: str) -> str:
    """The SHA-256 of a text's UTF-8 bytes (hex): which text a figure was measured on."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


HELD_OUT_FRACTION = 0.5
"""When calibration and evaluation name the same text, the evaluation keeps its last half."""


def held_out_cut(calib_text: str, eval_text: str) -> int | None:
    """Where a text given as both calibration and evaluation text is cut, or None.

    When the two texts are the same (the same characters, whatever their names), calibration
    draws only from ``text[:cut]`` and evaluation only from ``text[cut:]``, so no evaluated
    token was seen in calibration. The cut is the paragraph break (else the line break, else
    the space) nearest to :data:`HELD_OUT_FRACTION` of the text, or exactly there.

    Returns:
        The cut's character offset; None when the texts differ (each is used whole).
    """
    if calib_text != eval_text or len(eval_text) < 2:
        return None
    middle = int(len(eval_text) * (1 - HELD_OUT_FRACTION))
    reach = len(eval_text) // 20
    for mark in ("\n\n", "\n", " "):
        after = eval_text.find(mark, middle, middle + reach)
        before = eval_text.rfind(mark, middle - reach, middle)
        found = [p for p in (after, before) if p > 0]
        if found:
            best = min(found, key=lambda p: abs(p - middle))
            return best + len(mark)
    return middle


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
