"""Perplexity on non-overlapping windows: a hand computation, batching, short texts, cancel."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from solver.errors import InputError, RunError
from solver.io.data import eval_windows
from solver.io.models import LoadedModel
from solver.run.perplexity import EvalCancelled, perplexity


def _windows(count: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, 260, (count, seqlen), generator=generator)


def _by_hand(model: torch.nn.Module, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(windows).logits  # [W, S, V]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    return math.exp(float(nll))


def test_matches_hand_computation(tiny_model: LoadedModel) -> None:
    windows = _windows(5, 48)
    expected = _by_hand(tiny_model.model, windows)
    for batch_size in (1, 2, 5, 8):
        assert perplexity(tiny_model.model, windows, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-5
        )
    assert 200 < expected < 330  # a random model is about as unsure as its 260-token vocabulary


def test_on_a_text_shorter_than_asked(tiny_model: LoadedModel) -> None:
    text = "It was the best of times, it was the worst of times. " * 8  # 432 byte tokens
    windows = eval_windows(tiny_model.tokenizer, text, 10, 100)
    assert windows.shape == (4, 100)
    value = perplexity(tiny_model.model, windows, batch_size=3)
    assert value == pytest.approx(_by_hand(tiny_model.model, windows), rel=1e-5)


def test_progress_and_device(tiny_model: LoadedModel) -> None:
    calls: list[tuple[int, int]] = []
    perplexity(
        tiny_model.model,
        _windows(5, 16),
        batch_size=2,
        device="cpu",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_cancel_stops_between_batches(tiny_model: LoadedModel) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        cancel.set()

    with pytest.raises(EvalCancelled) as info:
        perplexity(
            tiny_model.model, _windows(6, 16), batch_size=2, cancel=cancel, progress=progress
        )
    assert seen == [2] and (info.value.done, info.value.total) == (2, 6)

    with pytest.raises(EvalCancelled) as info:
        perplexity(tiny_model.model, _windows(6, 16), cancel=cancel)
    assert info.value.done == 0


def test_non_finite_is_a_run_error(fresh_tiny_model: LoadedModel) -> None:
    with torch.no_grad():
        fresh_tiny_model.model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(RunError, match="not finite"):
        perplexity(fresh_tiny_model.model, _windows(2, 16))


def test_bfloat16_model(tiny_model: LoadedModel) -> None:
    import copy

    model = copy.deepcopy(tiny_model.model).to(torch.bfloat16)  # type: ignore[arg-type]  # transformers' wrapped .to
    value = perplexity(model, _windows(2, 16))
    assert math.isfinite(value) and value == pytest.approx(
        _by_hand(tiny_model.model, _windows(2, 16)), rel=0.05
    )


@pytest.mark.parametrize(
    "windows",
    [
        torch.zeros((0, 16), dtype=torch.long),
        torch.zeros((3, 1), dtype=torch.long),
        torch.zeros(16, dtype=torch.long),
        torch.zeros((2, 16)),
    ],
)
def test_bad_windows(tiny_model: LoadedModel, windows: torch.Tensor) -> None:
    with pytest.raises(InputError):
        perplexity(tiny_model.model, windows)


def test_bad_batch_size(tiny_model: LoadedModel) -> None:
    with pytest.raises(InputError, match="--batch-size"):
        perplexity(tiny_model.model, _windows(2, 16), batch_size=0)


def test_does_not_change_the_model(fresh_tiny_model: LoadedModel) -> None:
    model = fresh_tiny_model.model
    before = [p.clone() for p in model.parameters()]
    perplexity(model, _windows(2, 16))
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_every_perplexity_event_carries_its_protocol(tiny_model: LoadedModel) -> None:
    from duogpt_tui.runner import stream
    from solver import events as ev
    from solver.config import RunConfig

    config = RunConfig(
        model="tiny-random",
        nsamples=4,
        seqlen=32,
        eval_windows=4,
        proxy_every=1,
        proxy_windows=2,
        method="wanda",
        save_model=False,
        checkpoints=False,
        device="cpu",
    )
    measured = [e for e in stream(config) if isinstance(e, ev.PerplexityMeasured)]
    labels = [e.label for e in measured]
    assert labels[:2] == ["dense", "dense_act"] and labels[-1] == "pruned" and "proxy" in labels
    for event in measured:
        protocol = event.protocol
        assert protocol["text"] == "moby-dick" and len(protocol["text_sha256"]) == 64
        assert protocol["placement"] == "spread" and protocol["bos"] is False
        assert protocol["windows"] == event.windows == len(protocol["token_spans"])
        assert protocol["text_tokens"] > 100_000  # the whole held-out text, not a prefix
        assert ev.from_json(ev.to_json(event)) == event
    final = measured[-1].protocol["token_spans"]
    assert final[-1][1] > measured[-1].protocol["text_tokens"] * 3 / 4  # spread to the end
