"""Texts and token batches: built-in corpora, files, datasets offline, calibration, eval windows."""

from __future__ import annotations

import gzip
import json
import lzma
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from solver.errors import InputError
from solver.io.data import (
    BUILTIN_TEXTS,
    calibration_batch,
    eval_protocol,
    eval_windows,
    load_text,
)
from solver.io.models import LoadedModel

ASCII_TEXT = " ".join(f"word{i} and some filler text number {i * 7 % 13}." for i in range(3000))


def _input_error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _decode(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> str:
    """The text of one row of token ids."""
    text = tokenizer.decode(ids.tolist())
    assert isinstance(text, str), "one row decodes to one string"
    return text


# --------------------------------------------------------------------------------------------
# load_text


def test_builtin_texts() -> None:
    assert set(BUILTIN_TEXTS) == {"sotu", "moby-dick"}
    name, sotu = load_text("sotu")
    assert name == "sotu" and len(sotu) > 10_000_000
    name, moby = load_text("moby-dick")
    assert name == "moby-dick" and moby.startswith("ETYMOLOGY") and len(moby) > 1_000_000
    assert load_text(" Moby_Dick ")[0] == "moby-dick"
    assert moby[:5000] not in sotu  # calibration and evaluation never share text


def test_txt_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffhéllo wörld\n".encode())  # a BOM is dropped
    assert load_text(str(path)) == ("notes.txt", "héllo wörld\n")


def test_compressed_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt.xz").write_bytes(lzma.compress(b"compressed xz"))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "compressed gz"}\n'))
    assert load_text(str(tmp_path / "a.txt.xz"))[1] == "compressed xz"
    assert load_text(str(tmp_path / "b.jsonl.gz"))[1] == "compressed gz"


def test_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": "first doc", "id": 1}), "", json.dumps({"text": "second"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_text(str(path)) == ("docs.jsonl", "first doc\n\nsecond")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok"}\nnot json\n', "line 2 of"),
        ('{"text": "ok"}\n{"body": "x"}\n', 'has no "text"'),
        ('["text"]\n', 'has no "text"'),
        ('{"text": 3}\n', 'has no "text"'),
    ],
)
def test_bad_jsonl(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    assert expected in _input_error(load_text, str(path))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is empty"),
        (b"  \n\t\n", "is empty"),
        (b"text\x00with\x00nul", "binary"),
        ("caf\u00e9 cr\u00e8me".encode("latin-1"), "is not UTF-8"),
    ],
)
def test_bad_text_files(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    message = _input_error(load_text, str(path))
    assert expected in message
    if expected == "is not UTF-8":
        assert "re-encode" in message


def test_missing_file_unknown_name_and_folder(tmp_path: Path) -> None:
    assert "does not exist" in _input_error(load_text, str(tmp_path / "nope.txt"))
    assert "does not exist" in _input_error(load_text, "corpus.jsonl")
    message = _input_error(load_text, "shakespeare")
    assert "unknown text 'shakespeare'" in message and "sotu" in message
    assert "is a folder" in _input_error(load_text, str(tmp_path))
    assert "no text given" in _input_error(load_text, "")


@pytest.mark.parametrize("name", ["wikitext2", "c4"])
def test_hub_texts_offline_fail_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    before = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    start = time.perf_counter()
    message = _input_error(load_text, name)
    assert time.perf_counter() - start < 10.0
    assert "hub cannot be reached" in message
    assert before == (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)  # restored


# --------------------------------------------------------------------------------------------
# calibration_batch


def test_calibration_batch_is_seeded_and_fast(tiny_model: LoadedModel) -> None:
    _, sotu = load_text("sotu")
    tokenizer = tiny_model.tokenizer
    start = time.perf_counter()
    batch = calibration_batch(tokenizer, sotu, 32, 512, seed=0)
    assert time.perf_counter() - start < 3.0
    assert batch.shape == (32, 512) and batch.dtype == torch.long
    assert torch.equal(batch, calibration_batch(tokenizer, sotu, 32, 512, seed=0))
    other = calibration_batch(tokenizer, sotu, 32, 512, seed=1)
    assert not torch.equal(batch, other)
    assert len({tuple(row[:16].tolist()) for row in batch}) == 32  # different places


def test_calibration_windows_are_consecutive_text(tiny_model: LoadedModel) -> None:
    tokenizer = tiny_model.tokenizer
    text = ASCII_TEXT * 4  # long enough for the chunked path
    assert len(text) >= 4 * 64 * 12
    batch = calibration_batch(tokenizer, text, 4, 64, seed=3)
    for row in batch:
        assert _decode(tokenizer, row) in text
    assert int(batch.max()) < len(tokenizer)
    assert tokenizer.bos_token_id not in batch.flatten().tolist()


def test_calibration_short_text_is_tokenised_whole(tiny_model: LoadedModel) -> None:
    tokenizer = tiny_model.tokenizer
    text = ASCII_TEXT[:3000]
    batch = calibration_batch(tokenizer, text, 4, 100, seed=0)
    assert batch.shape == (4, 100)
    assert torch.equal(batch, calibration_batch(tokenizer, text, 4, 100, seed=0))
    for row in batch:
        assert _decode(tokenizer, row) in text


def test_calibration_text_too_short(tiny_model: LoadedModel) -> None:
    message = _input_error(
        calibration_batch, tiny_model.tokenizer, "short text", 4, 64, 0, name="mine.txt"
    )
    assert "calibration text 'mine.txt' has only 10 tokens" in message
    assert "4 x 64 = 256" in message and "--nsamples" in message


@pytest.mark.parametrize(("nsamples", "seqlen"), [(0, 8), (2, 0), (-1, 8)])
def test_calibration_bad_sizes(tiny_model: LoadedModel, nsamples: int, seqlen: int) -> None:
    _input_error(calibration_batch, tiny_model.tokenizer, ASCII_TEXT, nsamples, seqlen, 0)


class CountingTokenizer:
    """Wraps a tokenizer and counts the characters it is asked to tokenise."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chars = 0

    def __call__(self, text: str, **kwargs: Any) -> Any:
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)


def test_calibration_never_tokenises_the_whole_corpus(tiny_model: LoadedModel) -> None:
    _, sotu = load_text("sotu")
    counting = CountingTokenizer(tiny_model.tokenizer)
    calibration_batch(counting, sotu, 64, 1024, seed=0)
    assert counting.chars <= 64 * 1024 * 12 < len(sotu) / 10


class WordTokenizer:
    """One token per whitespace-separated word (ids by hashing): few tokens per character."""

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [sum(map(ord, word)) % 1000 for word in text.split()]}


def test_calibration_grows_chunks_when_tokens_are_long() -> None:
    text = " ".join(f"{'x' * 40}{i}" for i in range(20_000))  # ~45 characters per token
    batch = calibration_batch(WordTokenizer(), text, 3, 50, seed=0)
    assert batch.shape == (3, 50)
    assert torch.equal(batch, calibration_batch(WordTokenizer(), text, 3, 50, seed=0))


# --------------------------------------------------------------------------------------------
# eval_windows and eval_protocol


def test_eval_windows_are_the_text_prefix(tiny_model: LoadedModel) -> None:
    tokenizer = tiny_model.tokenizer
    _, moby = load_text("moby-dick")
    windows = eval_windows(tokenizer, moby, 5, 128)
    assert windows.shape == (5, 128) and windows.dtype == torch.long
    whole = tokenizer(moby[:10_000], add_special_tokens=False)["input_ids"]
    assert windows.flatten().tolist() == whole[: 5 * 128]


def test_eval_windows_fewer_than_asked(tiny_model: LoadedModel) -> None:
    text = "a" * 1000  # 1000 byte tokens
    windows = eval_windows(tiny_model.tokenizer, text, 8, 300)
    assert windows.shape == (3, 300)
    assert eval_windows(tiny_model.tokenizer, text, 0, 300).shape == (0, 300)


def test_eval_windows_text_shorter_than_one_window(tiny_model: LoadedModel) -> None:
    message = _input_error(eval_windows, tiny_model.tokenizer, "tiny", 4, 64, name="t.txt")
    assert "evaluation text 't.txt' has only 4 tokens" in message and "--seqlen" in message
    _input_error(eval_windows, tiny_model.tokenizer, "text", -1, 64)


def test_eval_protocol(tiny_model: LoadedModel) -> None:
    windows = torch.zeros((6, 32), dtype=torch.long)
    protocol = eval_protocol("moby-dick", windows, tiny_model.tokenizer)
    assert protocol == {
        "text": "moby-dick",
        "windows": 6,
        "seqlen": 32,
        "tokens": 192,
        "bos": False,
        "tokenizer": "tiny-random (TokenizersBackend, vocab 260)",
        "overlap": 0,
    }
    assert json.loads(json.dumps(protocol)) == protocol
