"""Texts and token batches: built-in corpora, files, datasets offline, calibration, eval windows."""

from __future__ import annotations

import gzip
import itertools
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
    adds_bos,
    calibration_batch,
    eval_sample,
    eval_windows,
    held_out_cut,
    load_text,
    text_sha256,
    window_starts,
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
    assert name == "moby-dick" and moby.startswith("CHAPTER 1. Loomings.") and len(moby) > 1e6
    assert load_text(" Moby_Dick ")[0] == "moby-dick"
    assert moby[:5000] not in sotu  # calibration and evaluation never share text


def test_builtin_texts_are_prose_only() -> None:
    _, moby = load_text("moby-dick")
    assert "ETYMOLOGY" not in moby and "EXTRACTS" not in moby[:50_000]
    assert moby.rstrip().endswith("only found another orphan.")  # the end of the Epilogue
    _, sotu = load_text("sotu")
    for insertion in ("[Laughter]", "[Applause]", "(Applause.)", "[Footnote", "[p.2]"):
        assert insertion not in sotu, insertion
    assert "appears in the Congressional Record" not in sotu
    assert "  " not in sotu[:200_000]  # the cuts take their space with them


def test_provenance_states_the_cuts() -> None:
    from solver.io.data import CORPORA

    provenance = (CORPORA / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "[0, 21819)" in provenance and "CHAPTER 1. Loomings." in provenance
    assert "| 8398823 | 8398917 | editor's note |" in provenance


def test_corpus_cuts_are_deterministic() -> None:
    from solver.io.corpora.build import moby_dick, sotu

    source = "Thank you. (Applause.) Thanks. [Laughter] Done.[1] [Footnote 1: a note.] End."
    cleaned, cuts = sotu(source)
    assert cleaned == "Thank you. Thanks. Done. End."
    assert [cut.what for cut in cuts] == [
        "audience reaction",
        "audience reaction",
        "footnote mark",
    ]
    assert sotu(source) == (cleaned, cuts)
    text, (front,) = moby_dick("ETYMOLOGY. x\n\nCHAPTER 1. Loomings.\n\nCall me Ishmael.")
    assert text.startswith("CHAPTER 1.") and (front.start, front.end) == (0, 14)


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


def test_eval_sample_protocol(tiny_model: LoadedModel) -> None:
    text = ASCII_TEXT
    sample = eval_sample(tiny_model.tokenizer, text, 6, 32, name="notes.txt")
    tokens = tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    protocol = sample.protocol
    assert protocol["text"] == "notes.txt"
    assert protocol["text_sha256"] == text_sha256(text) and len(protocol["text_sha256"]) == 64
    assert protocol["text_tokens"] == len(tokens) and protocol["chars"] == [0, len(text)]
    assert (protocol["windows"], protocol["seqlen"], protocol["tokens"]) == (6, 32, 192)
    assert protocol["placement"] == "spread" and protocol["bos"] is False
    assert protocol["tokenizer"] == "tiny-random (TokenizersBackend, vocab 260)"
    assert protocol["overlap"] == 0
    for row, (start, end) in zip(sample.windows.tolist(), protocol["token_spans"], strict=True):
        assert row == tokens[start:end]
    assert json.loads(json.dumps(protocol)) == protocol


def test_spread_windows_cover_the_whole_text(tiny_model: LoadedModel) -> None:
    _, moby = load_text("moby-dick")
    text = moby[:200_000]
    total = len(tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"])
    spans = eval_sample(tiny_model.tokenizer, text, 8, 256).protocol["token_spans"]
    assert spans[0][0] < total / 8 and spans[-1][1] > total * 7 / 8  # start to end
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(spans)]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    first = eval_sample(tiny_model.tokenizer, text, 8, 256, placement="first")
    assert first.protocol["token_spans"][-1][1] == 8 * 256  # the old protocol: the start only
    assert torch.equal(first.windows, eval_windows(tiny_model.tokenizer, text, 8, 256))


@pytest.mark.parametrize("placement", ["spread", "first"])
def test_window_starts_never_overlap(placement: str) -> None:
    for total in range(1, 90):
        for length in range(1, 12):
            for count in range(1, total // length + 1):
                starts = window_starts(total, count, length, placement)
                assert len(starts) == count and starts[0] >= 0
                assert starts[-1] + length <= total
                assert all(b - a >= length for a, b in itertools.pairwise(starts))


def test_bad_placement(tiny_model: LoadedModel) -> None:
    message = _input_error(eval_sample, tiny_model.tokenizer, ASCII_TEXT, 2, 8, placement="end")
    assert "unknown evaluation placement 'end'" in message


# --------------------------------------------------------------------------------------------
# held out by construction


class UniqueWordTokenizer:
    """Word ``w<i>`` is token ``i``: a token id says where in the text it came from."""

    bos_token_id = None
    name_or_path = "unique-words"

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [int(word[1:]) for word in text.split() if word[1:].isdigit()]}

    def __len__(self) -> int:
        return 10**6


def test_same_text_is_held_out_by_construction() -> None:
    text = "\n\n".join(" ".join(f"w{i}" for i in range(p, p + 50)) for p in range(0, 20_000, 50))
    assert held_out_cut(text, text + " ") is None  # different texts: each is used whole
    cut = held_out_cut(text, text)
    assert cut is not None and text[cut - 2 : cut] == "\n\n"  # at a paragraph break
    assert abs(cut - len(text) / 2) < len(text) / 20
    tokenizer = UniqueWordTokenizer()
    calibration: set[int] = set()
    for seed in range(5):
        batch = calibration_batch(tokenizer, text[:cut], 16, 64, seed=seed)
        calibration.update(batch.flatten().tolist())
    for placement in ("spread", "first"):
        sample = eval_sample(tokenizer, text, 16, 64, placement=placement, chars=(cut, len(text)))
        evaluated = set(sample.windows.flatten().tolist())
        assert evaluated and calibration and not calibration & evaluated  # no overlap
        assert min(evaluated) > max(calibration)
        assert sample.protocol["chars"] == [cut, len(text)]


def test_a_run_with_the_same_text_holds_out_its_evaluation(tmp_path: Path) -> None:
    from duogpt_tui.runner import stream
    from solver.config import RunConfig
    from solver.events import PerplexityMeasured, RunStarted

    path = tmp_path / "words.txt"
    path.write_text(ASCII_TEXT, encoding="utf-8")
    config = RunConfig(
        model="tiny-random",
        calib=str(path),
        eval=str(path),
        nsamples=4,
        seqlen=64,
        eval_windows=4,
        method="magnitude",
        act_sparsity=0.0,
        save_model=False,
        checkpoints=False,
        device="cpu",
    )
    events = list(stream(config))
    started = next(e for e in events if isinstance(e, RunStarted))
    measured = [e for e in events if isinstance(e, PerplexityMeasured)]
    cut = started.calib["chars"][1]
    assert 0 < cut < len(ASCII_TEXT) and started.calib["bos"] is False
    for event in measured:
        assert event.protocol["chars"] == [cut, len(ASCII_TEXT)]
        assert event.protocol["calib_chars"] == [0, cut]


# --------------------------------------------------------------------------------------------
# BOS


class BosTokenizer:
    """The tiny tokenizer, adding BOS by default (as Gemma's and LLaMA-2's do)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.bos_token_id = tokenizer.bos_token_id
        self.name_or_path = "bos-tiny"

    def __call__(self, text: str, add_special_tokens: bool = True, **kw: Any) -> Any:
        ids = self.tokenizer(text, add_special_tokens=False, **kw)["input_ids"]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + list(ids)}

    def __len__(self) -> int:
        return len(self.tokenizer)


def test_bos_leads_every_sequence_when_the_tokenizer_adds_it(tiny_model: LoadedModel) -> None:
    plain = tiny_model.tokenizer
    assert adds_bos(plain) is False  # like the default model's: nothing changes for it
    tokenizer = BosTokenizer(plain)
    assert adds_bos(tokenizer) is True
    bos = plain.bos_token_id
    for text in (ASCII_TEXT, ASCII_TEXT * 4):  # tokenised whole, and sampled in chunks
        batch = calibration_batch(tokenizer, text, 4, 64, seed=0)
        assert batch.shape == (4, 64) and batch[:, 0].tolist() == [bos] * 4  # --seqlen counts it
        assert bos not in batch[:, 1:].flatten().tolist()
        for row in batch:
            assert _decode(plain, row[1:]) in text
    sample = eval_sample(tokenizer, ASCII_TEXT, 5, 33)
    assert sample.windows.shape == (5, 33) and sample.windows[:, 0].tolist() == [bos] * 5
    assert sample.protocol["bos"] is True
    tokens = plain(ASCII_TEXT, add_special_tokens=False)["input_ids"]
    for row, (start, end) in zip(
        sample.windows.tolist(), sample.protocol["token_spans"], strict=True
    ):
        assert end - start == 32 and row[1:] == tokens[start:end]
    plain_batch = calibration_batch(plain, ASCII_TEXT, 4, 64, seed=0)
    assert bos not in plain_batch.flatten().tolist()
