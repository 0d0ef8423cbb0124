"""Zero-shot tasks through lm-evaluation-harness: the built-in tasks' data, running them on the
tiny model (with the activation-sparsity hooks), and a pruning run that scores them."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import yaml

from solver.errors import InputError
from solver.io.models import LoadedModel
from solver.io.tasks import BUILTIN_TASKS, TASKS_DIR
from solver.io.tasks.docs import read_docs
from solver.math.activations import ActivationSparsifier
from solver.run import tasks
from solver.run.adapters import find_adapter


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_builtin_task_files(name: str) -> None:
    task = BUILTIN_TASKS[name]
    text = (TASKS_DIR / f"{name}.yaml").read_text().replace("!function ", "")  # lm-eval's tag
    config: dict[str, Any] = yaml.safe_load(text)
    assert config["task"] == name and config["custom_dataset"] == "docs.load"
    docs = read_docs(config["dataset_kwargs"]["data_file"])
    assert len(docs) == task.examples and task.limit <= task.examples
    first = docs[: task.limit]
    if name == "last_word":
        for doc in first:
            assert doc["target"].startswith(" ") and doc["target"].strip().isalpha()
            assert doc["target"].strip().lower() in doc["context"].lower()  # LAMBADA-style
    elif name == "next_sentence":
        assert {len(doc["choices"]) for doc in docs} == {4}
        labels = collections.Counter(doc["label"] for doc in first)
        assert set(labels) == {0, 1, 2, 3} and max(labels.values()) < task.limit / 2
        sources = collections.Counter(doc["source"].split()[0] for doc in first)
        assert sources["moby-dick"] == sources["devils-dictionary"] == task.limit // 2
    else:
        labels = collections.Counter(doc["label"] for doc in first)
        assert labels[0] == labels[1] == task.limit // 2  # chance is 50% at any even limit


def test_calibration_text_is_not_in_the_tasks() -> None:
    from solver.io.data import load_text

    _, sotu = load_text("sotu")
    for name in BUILTIN_TASKS:
        for doc in read_docs(f"{name}.jsonl.xz")[:20]:
            sample = str(doc.get("context") or doc.get("body"))[:60]
            assert sample not in sotu


def test_unknown_task_lists_the_builtin_ones() -> None:
    with pytest.raises(InputError) as info:
        tasks.check_tasks(["lambada"])
    message = str(info.value)
    assert "unknown task 'lambada'" in message and "last_word, next_sentence, spam_ham" in message
    assert tasks.parse_tasks(" spam_ham,last_word ,spam_ham,") == ["spam_ham", "last_word"]


def test_run_tasks_on_the_tiny_model_with_the_sparsity_hooks(tiny_model: LoadedModel) -> None:
    model = tiny_model.model
    sparsifier = ActivationSparsifier(0.5, "topk", {})
    with sparsifier.attach(find_adapter(model).all_linears(model)):
        scores = tasks.run_tasks(model, tiny_model.tokenizer, list(BUILTIN_TASKS), limit=4)
    assert list(scores) == list(BUILTIN_TASKS)
    for name, row in scores.items():
        assert row["n"] == 4 and 0.0 <= row["acc"] <= 1.0, name
        assert row["acc_stderr"] is not None
    assert scores["last_word"]["acc_norm"] is None
    assert scores["spam_ham"]["acc_norm"] is not None
    assert sparsifier.mean_measured() == pytest.approx(0.5, abs=0.05)  # the hooks ran


def test_a_run_scores_the_dense_and_the_pruned_model_once_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import solver.io.models as models
    from duogpt_tui.runner import stream
    from solver.config import RunConfig
    from solver.events import TasksMeasured

    loads: list[str] = []
    real = models.load_model

    def counting(spec: str, **kwargs: Any) -> LoadedModel:
        loads.append(spec)
        return real(spec, **kwargs)

    monkeypatch.setattr(models, "load_model", counting)
    config = RunConfig(
        model="tiny-random",
        nsamples=4,
        seqlen=32,
        eval_windows=2,
        method="wanda",
        tasks="spam_ham",
        task_limit=2,
        save_model=False,
        checkpoints=False,
        device="cpu",
    )
    scored = [e for e in stream(config) if isinstance(e, TasksMeasured)]
    assert [e.label for e in scored] == ["dense", "pruned"]
    assert all(e.tasks["spam_ham"]["n"] == 2 and e.limit == 2 for e in scored)
    assert scored[0].act_sparsity == 0.0 and scored[1].act_sparsity > 0.4
    assert loads == ["tiny-random"], "the model is loaded once"


def test_shared_context_scores_match_scoring_each_request_alone(
    tiny_model: LoadedModel,
) -> None:
    import torch

    model = tiny_model.model
    ids = tiny_model.tokenizer("The whale and the sea, the ship", add_special_tokens=False)
    text = list(ids["input_ids"])
    requests = [
        (text[:10], text[10:13]),  # four choices of one context (one of them one token long)
        (text[:10], text[13:15]),
        (text[:10], text[15:16]),
        (text[:10], text[10:12]),
        (text[:5], text[5:9]),  # alone with its context
        (text[2:8], text[8:9]),
        (text[:1], text[1:4]),  # a one-token context
    ]
    scores = tasks.score_requests(model, requests, batch_size=2)
    for (context, continuation), (logprob, greedy) in zip(requests, scores, strict=True):
        full = torch.tensor([context + continuation])
        with torch.no_grad():
            logits = model(input_ids=full, use_cache=False).logits[0].float()
        predicting = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
        target = torch.tensor(continuation)
        expected = float(predicting.gather(-1, target[:, None]).sum())
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == bool((predicting.argmax(-1) == target).all())
