"""The bad-input matrix of issue 5, through the real ``duogpt prune`` and its real pre-flight.

Each case must exit 2 with exactly one ``error:`` line on stderr (no traceback), make no run
directory, and leave the user's files alone. Cases already covered elsewhere are not repeated:
a missing model path and a missing calibration file (tests/cli/test_end_to_end.py), sparsities
out of range or not numbers and malformed N:M patterns (tests/cli/test_cli.py), an ``--out``
that holds another run or cannot be created (tests/cli/test_cli.py).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections import namedtuple
from pathlib import Path

import pytest

from solver.io import system
from tests.cli.conftest import Cli
from tests.reliability.conftest import FAST, one_error_line


def refused(cli: Cli, *args: str) -> str:
    """Run ``duogpt prune FAST ARGS``: exit 2, one error line, no run directory; the line."""
    result = cli("prune", *FAST, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert cli.run_dirs() == []
    return one_error_line(result.stderr)


def gguf_bytes(data_bytes: int) -> bytes:
    """A GGUF v3 file with one 4x4 float32 tensor whose data holds ``data_bytes`` of its 64."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    header += string("general.architecture") + struct.pack("<I", 8) + string("llama")
    header += string("w") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 4)
    header += struct.pack("<IQ", 0, 0)  # type F32, offset 0
    header += b"\0" * (-len(header) % 32)  # data starts at the next 32-byte boundary
    return header + b"\0" * data_bytes


# --------------------------------------------------------------------------------------------
# models


def test_a_folder_that_is_not_a_model(real_cli: Cli) -> None:
    folder = real_cli.root / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    line = refused(real_cli, "--model", str(folder))
    assert "is not a model folder (no config.json)" in line
    assert [p.name for p in folder.iterdir()] == ["cat.jpg"]


def test_a_non_causal_model(real_cli: Cli) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    BertModel(config).save_pretrained(real_cli.root / "bert")
    line = refused(real_cli, "--model", str(real_cli.root / "bert"))
    assert "is a bert model (BertModel), not a causal language model" in line


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_safetensors_file(real_cli: Cli, saved_tiny: Path, damage: str) -> None:
    folder = real_cli.root / "damaged"
    shutil.copytree(saved_tiny, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncated" else os.urandom(4096)
    weights.write_bytes(damaged)
    line = refused(real_cli, "--model", str(folder))
    assert f"cannot load the weights in '{folder}'" in line
    assert ("is truncated" if damage == "truncated" else "no valid safetensors header") in line
    assert weights.read_bytes() == damaged


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (gguf_bytes(20), "truncated: "),
        (gguf_bytes(64)[:40], "truncated header"),
        (b"PK\x03\x04" + bytes(100), "not a GGUF file: bad magic bytes"),
    ],
    ids=["truncated-data", "truncated-header", "not-gguf"],
)
def test_a_damaged_gguf_file(real_cli: Cli, content: bytes, reason: str) -> None:
    path = real_cli.root / "model.gguf"
    path.write_bytes(content)
    line = refused(real_cli, "--model", str(path))
    assert f"cannot read the GGUF file '{path}' ({reason}" in line
    assert "download it again" in line


def test_a_complete_gguf_header_passes_the_check(tmp_path: Path) -> None:
    from solver.io.inputs import model_facts

    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes(64))
    assert model_facts(str(path)).n_params == 16


def test_a_hub_id_while_offline(real_cli: Cli) -> None:
    line = refused(real_cli, "--model", "no-such-org/no-such-model-xyz")
    assert "is not in the local cache and the hub cannot be reached" in line


def test_seqlen_above_the_models_context(real_cli: Cli) -> None:
    line = refused(real_cli, "--seqlen", "2048")
    assert line == (
        "error: --seqlen 2048 is longer than the model's context of 1024 tokens: "
        "use --seqlen 1024 or less"
    )


def test_cuda_without_cuda(real_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "cuda_available", lambda: False)
    line = refused(real_cli, "--device", "cuda")
    assert "--device cuda was asked for but CUDA is not available" in line
    assert "use --device cpu" in line


# --------------------------------------------------------------------------------------------
# calibration texts


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02binary\x00" * 50, "looks binary"),
        ("caf\u00e9 ".encode("latin-1") * 100, "is not UTF-8 (byte 0xe9 at offset 3)"),
        (b"too short " * 5, "has only 50 bytes, fewer than the 128 tokens of nsamples x seqlen"),
    ],
    ids=["empty", "binary", "latin-1", "too-short"],
)
def test_a_bad_calibration_file(real_cli: Cli, content: bytes, needle: str) -> None:
    path = real_cli.root / "calib.txt"
    path.write_bytes(content)
    line = refused(real_cli, "--calib", str(path))
    assert needle in line
    assert path.read_bytes() == content


def test_a_too_short_evaluation_file(real_cli: Cli) -> None:
    path = real_cli.root / "eval.txt"
    path.write_text("tiny")
    line = refused(real_cli, "--eval", str(path))
    assert "--eval text 'eval.txt' has only 4 bytes" in line and "a shorter --seqlen" in line


# --------------------------------------------------------------------------------------------
# the run directory


def test_a_full_disk(real_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        "duogpt_tui.runstore.shutil.disk_usage", lambda path: usage(10**9, 10**9, 2**20)
    )
    line = refused(real_cli, "--out", "run")
    assert "only 1 MB free on the disk of run" in line and "choose another --out" in line
    assert not (real_cli.root / "run").exists()


def test_a_bad_model_never_touches_the_run_it_would_overwrite(real_cli: Cli) -> None:
    """Bad input is found before ``--overwrite`` deletes anything."""
    run = real_cli.root / "mine"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    (run / "events.jsonl").write_text("")
    (run / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = real_cli("prune", *FAST, "--model", "./no-such-model", "--out", "mine", "--overwrite")
    assert result.exit_code == 2
    assert "model './no-such-model' not found" in one_error_line(result.stderr)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_debug_shows_the_traceback(real_cli: Cli) -> None:
    result = real_cli("prune", *FAST, "--seqlen", "2048", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "InputError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: --seqlen 2048")


def test_a_too_short_evaluation_file_names_the_eval_window_option(real_cli: Cli) -> None:
    path = real_cli.root / "eval.txt"
    path.write_text("a little text " * 4)
    line = refused(real_cli, "--eval", str(path), "--eval-seqlen", "64")
    assert "fewer than the 64 tokens of one window of --eval-seqlen" in line
    assert "a shorter --eval-seqlen" in line
