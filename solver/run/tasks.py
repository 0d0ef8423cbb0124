"""Zero-shot task accuracy through lm-evaluation-harness (ALGORITHM.md §7).

Two kinds of task:

* the built-in tasks (:data:`solver.io.tasks.BUILTIN_TASKS`): lm-eval task configurations with
  their data, shipped in ``solver/io/tasks``; they work offline;
* the hub tasks (:data:`HUB_TASKS`): lm-eval's own ARC, HellaSwag, PIQA, WinoGrande, BoolQ,
  OpenBookQA and LAMBADA configurations, whose datasets come from the Hugging Face hub or its
  local cache. Offline without them, :func:`check_tasks` refuses them with one line.

:func:`run_tasks` evaluates the caller's loaded model (never a second copy) wrapped in lm-eval's
``HFLM``; the caller attaches the activation-sparsity hooks around it, the same hooks as the
perplexity evaluation. lm-eval is imported only here, and only when tasks run.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from solver.errors import InputError
from solver.io.tasks import BUILTIN_TASKS, TASKS_DIR

__all__ = [
    "HUB_TASKS",
    "HubTask",
    "check_tasks",
    "list_lines",
    "parse_tasks",
    "run_tasks",
]


@dataclass(frozen=True)
class HubTask:
    """A task of lm-eval whose dataset comes from the Hugging Face hub.

    Attributes:
        name: the lm-eval task name.
        folder: its configuration's folder inside ``lm_eval/tasks``.
        dataset: the hub dataset.
        config: the dataset's configuration (None: the default).
        chance: the accuracy of guessing at random.
    """

    name: str
    folder: str
    dataset: str
    config: str | None
    chance: float


HUB_TASKS: dict[str, HubTask] = {
    task.name: task
    for task in (
        HubTask("arc_easy", "arc", "allenai/ai2_arc", "ARC-Easy", 0.25),
        HubTask("arc_challenge", "arc", "allenai/ai2_arc", "ARC-Challenge", 0.25),
        HubTask("hellaswag", "hellaswag", "Rowan/hellaswag", None, 0.25),
        HubTask("piqa", "piqa", "baber/piqa", None, 0.5),
        HubTask("winogrande", "winogrande", "allenai/winogrande", "winogrande_xl", 0.5),
        HubTask("boolq", "super_glue/boolq", "aps/super_glue", "boolq", 0.5),
        HubTask("openbookqa", "openbookqa", "allenai/openbookqa", "main", 0.25),
        HubTask("lambada_openai", "lambada", "EleutherAI/lambada_openai", "default", 0.0),
    )
}
"""The hub tasks by name (all their examples by default)."""


def parse_tasks(spec: str) -> list[str]:
    """The task names of ``--tasks NAME[,NAME...]``, in order, without repeats or blanks."""
    names: list[str] = []
    for part in str(spec or "").split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    return names


def list_lines() -> list[str]:
    """One line per task for ``duogpt eval --list-tasks``: its name first."""
    width = max(len(name) for name in [*BUILTIN_TASKS, *HUB_TASKS])
    lines = [
        f"{task.name:<{width}}  built-in  chance {task.chance:.0%}, {task.limit} of "
        f"{task.examples} examples by default: {task.summary}"
        for task in BUILTIN_TASKS.values()
    ]
    lines += [
        f"{task.name:<{width}}  hub       chance {task.chance:.0%}, all examples by default: "
        f"needs {task.dataset} (online, or in the Hugging Face cache)"
        for task in HUB_TASKS.values()
    ]
    return lines


def check_tasks(names: Sequence[str], *, data: bool = True) -> None:
    """Refuse unknown tasks, and hub tasks whose dataset cannot be had (one line each).

    Args:
        names: the task names.
        data: also check that each hub task's dataset is reachable: online, or in the local
            Hugging Face cache (tried offline, which takes a few seconds per dataset).

    Raises:
        InputError: an unknown name (the line lists the tasks), or a hub task whose dataset
            is not in the cache while the hub cannot be reached.
    """
    if not names:
        raise InputError("no task given: name one with --tasks NAME[,NAME...]")
    for name in names:
        if name not in BUILTIN_TASKS and name not in HUB_TASKS:
            raise InputError(
                f"unknown task {name!r}: the built-in tasks are {', '.join(BUILTIN_TASKS)}; "
                f"with their datasets, also {', '.join(HUB_TASKS)} (duogpt eval --list-tasks)"
            )
    hub = [HUB_TASKS[name] for name in names if name in HUB_TASKS]
    if not data or not hub:
        return
    from solver.io.models import hub_reachable

    if hub_reachable():
        return
    for task in hub:
        if not _cached(task):
            raise InputError(
                f"task {task.name!r} needs the dataset {task.dataset}"
                f"{f' ({task.config})' if task.config else ''}, which is not in the Hugging "
                "Face cache, and the hub cannot be reached: run it once online (the dataset is "
                "then cached), or use the built-in tasks"
            )


def _cached(task: HubTask) -> bool:
    """Whether the hub task's dataset loads from the local cache alone."""
    from solver.io.data import datasets_offline, quiet_datasets

    try:
        with datasets_offline(True), quiet_datasets():
            import datasets

            datasets.load_dataset(task.dataset, task.config)
    except Exception as err:
        if isinstance(err, MemoryError):
            raise
        return False
    return True


def default_limit(name: str) -> int | None:
    """A task's default number of examples (None: all of them)."""
    task = BUILTIN_TASKS.get(name)
    return task.limit if task is not None else None


def run_tasks(
    model: Any,
    tokenizer: Any,
    names: Sequence[str],
    *,
    limit: int = 0,
    batch_size: int = 8,
) -> dict[str, dict[str, Any]]:
    """Zero-shot accuracy of ``model`` on the tasks (no few-shot examples, no chat template).

    The model is used as it is (its device, its dtype, any hooks the caller attached); when the
    tokenizer adds BOS by default, every request starts with it, as the perplexity windows do.

    Args:
        model: a loaded causal LM (``transformers`` ``PreTrainedModel``).
        tokenizer: its tokenizer.
        names: task names (checked by :func:`check_tasks`).
        limit: examples per task; 0: each task's default (:func:`default_limit`).
        batch_size: requests per forward pass.

    Returns:
        ``{name: {"acc", "acc_norm", "acc_stderr", "n"}}``: accuracy, length-normalised accuracy
        (None for a task that has none), the standard error of ``acc``
        (``sqrt(acc (1 - acc) / (n - 1))``) and the examples scored.

    Raises:
        InputError: an unknown task, or a hub task's dataset that cannot be loaded.
    """
    check_tasks(names, data=False)
    from solver.io.data import adds_bos

    with _quiet_lm_eval():
        from lm_eval import evaluator
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        class SharedContextLM(HFLM):  # type: ignore[misc]
            """lm-eval's HF wrapper, scoring through :func:`score_requests` (no progress bars:
            stderr is ours)."""

            def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
                return super().loglikelihood(requests, disable_tqdm=True)

            def _loglikelihood_tokens(
                self, requests: Any, disable_tqdm: bool = False, override_bs: Any = None
            ) -> list[tuple[float, bool]]:
                return score_requests(
                    self.model,
                    [(list(ctx), list(cont)) for _, ctx, cont in requests],
                    device=self.device,
                    batch_size=int(self.batch_size),
                    max_length=int(self.max_length),
                )

        lm = SharedContextLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            add_bos_token=adds_bos(tokenizer),
        )
        paths = [str(TASKS_DIR)]
        paths += sorted(
            {str(_lm_eval_tasks() / HUB_TASKS[n].folder) for n in names if n in HUB_TASKS}
        )
        manager = TaskManager(include_path=paths, include_defaults=False)
        by_limit: dict[int | None, list[str]] = {}
        for name in names:
            by_limit.setdefault(limit if limit > 0 else default_limit(name), []).append(name)
        results: dict[str, dict[str, Any]] = {}
        for count, group in by_limit.items():
            loaded = _load_tasks(manager, group)
            out = evaluator.evaluate(lm, loaded, limit=count, bootstrap_iters=0, log_samples=False)
            if out is None:  # not rank 0 (never here: one process)
                continue
            for name in group:
                results[name] = _figures(out, name)
    return {name: results[name] for name in names if name in results}


@torch.no_grad()
def score_requests(
    model: Any,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    device: Any = "cpu",
    batch_size: int = 8,
    max_length: int = 2048,
) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, and whether it is greedy.

    What lm-eval's ``HFLM`` computes, for less: requests that share a context (the choices of a
    multiple-choice question) run the context once and reuse its key/value cache for every
    choice, and requests alone with their context are batched, right-padded (a causal model never
    looks at the padding after a token, so no attention mask is needed).

    Args:
        model: a causal LM (``input_ids``, ``past_key_values``, ``use_cache`` -> ``.logits``).
        requests: ``(context tokens, continuation tokens)``; a context has at least one token.
        device: where the token batches go (the model's device).
        batch_size: requests per forward pass.
        max_length: the longest sequence the model takes (longer contexts lose their start).

    Returns:
        ``(sum of the continuation's log-probabilities, every continuation token is the argmax)``
        per request, in order.
    """
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, _) in enumerate(requests):
        groups.setdefault(tuple(context), []).append(index)
    alone = [members[0] for members in groups.values() if len(members) == 1]
    alone.sort(key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
    for start in range(0, len(alone), batch_size):
        batch = alone[start : start + batch_size]
        rows = [_fit(*requests[i], max_length) for i in batch]
        inputs = [context + continuation[:-1] for context, continuation in rows]
        logits = _forward(model, inputs, device)  # [B, L, V]
        for row, index in enumerate(batch):
            context, continuation = rows[row]
            first = len(context) - 1  # the position that predicts the continuation's first token
            results[index] = _score(logits[row, first : first + len(continuation)], continuation)
    for members in groups.values():
        if len(members) == 1:
            continue
        continuations = [requests[i][1] for i in members]
        longest = max(len(c) for c in continuations)
        context, _ = _fit(requests[members[0]][0], [0] * longest, max_length)
        past = None
        if len(context) > 1:  # the shared part, once: [1, C - 1]
            prefix = torch.tensor([context[:-1]], device=device)
            out = model(input_ids=prefix, use_cache=True)
            past = getattr(out, "cache", None) or out.past_key_values
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            inputs = [[context[-1], *requests[i][1][:-1]] for i in chunk]
            cache = copy.deepcopy(past) if past is not None else None
            if cache is not None and len(chunk) > 1:
                cache.batch_repeat_interleave(len(chunk))
            logits = _forward(model, inputs, device, cache)  # [n, L, V]
            for row, index in enumerate(chunk):
                continuation = requests[index][1]
                results[index] = _score(logits[row, : len(continuation)], continuation)
    return [result if result is not None else (float("-inf"), False) for result in results]


def _fit(
    context: list[int], continuation: list[int], max_length: int
) -> tuple[list[int], list[int]]:
    """The context cut from the left so that context + continuation fit ``max_length + 1``."""
    keep = max(1, max_length + 1 - len(continuation))
    return context[-keep:], continuation


def _forward(model: Any, rows: list[list[int]], device: Any, past: Any = None) -> torch.Tensor:
    """Float32 logits of right-padded rows (the padding repeats each row's last token)."""
    width = max(len(row) for row in rows)
    padded = [row + [row[-1]] * (width - len(row)) for row in rows]
    ids = torch.tensor(padded, dtype=torch.long, device=device)
    if past is None:
        logits: torch.Tensor = model(input_ids=ids, use_cache=False).logits
    else:
        logits = model(input_ids=ids, use_cache=True, **{_cache_argument(model): past}).logits
    return logits.float()


def _cache_argument(model: Any) -> str:
    """What the model's forward calls its key/value cache (``cache`` since transformers 5.x)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _score(logits: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """``(sum log p(continuation), greedy)`` from the ``[len(continuation), V]`` logits."""
    logprobs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(continuation, device=logits.device)
    picked = logprobs.gather(-1, target[:, None]).squeeze(-1)
    greedy = bool((logprobs.argmax(dim=-1) == target).all())
    return float(picked.sum()), greedy


def _load_tasks(manager: Any, names: list[str]) -> Any:
    """lm-eval's task objects; a dataset that fails to load is an :class:`InputError`."""
    from solver.io.data import datasets_offline
    from solver.io.models import hub_reachable

    offline = any(name in HUB_TASKS for name in names) and not hub_reachable()
    try:
        with datasets_offline(offline):
            return manager.load(names)
    except Exception as err:
        if isinstance(err, MemoryError):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise InputError(
            f"cannot load the tasks {', '.join(names)} ({first}): check your connection, or "
            "use the built-in tasks (duogpt eval --list-tasks)"
        ) from err


def _figures(out: dict[str, Any], name: str) -> dict[str, Any]:
    """``acc``, ``acc_norm``, ``acc_stderr`` and ``n`` of one task in lm-eval's results."""
    scores = out["results"][name]
    acc = scores.get("acc,none")
    norm = scores.get("acc_norm,none")
    n = int(out.get("n-samples", {}).get(name, {}).get("effective", 0))
    stderr = math.sqrt(acc * (1 - acc) / (n - 1)) if isinstance(acc, float) and n > 1 else None
    return {
        "acc": float(acc) if acc is not None else None,
        "acc_norm": float(norm) if norm is not None else None,
        "acc_stderr": stderr,
        "n": n,
    }


def _lm_eval_tasks() -> Path:
    """lm-eval's own task configurations."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's info logging and progress bars off (stderr carries our progress only)."""
    import lm_eval.api.task as task_module

    logger = logging.getLogger("lm_eval")
    level, bar = logger.level, task_module.tqdm
    logger.setLevel(logging.ERROR)
    task_module.tqdm = _no_bar
    try:
        yield
    finally:
        logger.setLevel(level)
        task_module.tqdm = bar


def _no_bar(items: Any, *_: Any, **__: Any) -> Any:
    """``tqdm`` that shows nothing."""
    return items
