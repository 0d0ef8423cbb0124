"""``duogpt eval --tasks`` / ``--list-tasks`` and ``duogpt prune --tasks``: output and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from duogpt_tui import cli as cli_mod
from solver.io.tasks import BUILTIN_TASKS
from solver.run import tasks as tasks_mod
from tests.cli.conftest import Cli
from tests.cli.test_cli import FAST, one_error_line, one_json

SCORES = {"acc": 0.6, "acc_norm": 0.55, "acc_stderr": 0.049, "n": 100}


def fake_evaluate(target: str, **kwargs: Any) -> dict[str, Any]:
    """What ``solver.run.evaluate.evaluate`` returns for tasks (no model is loaded)."""
    return {
        "model": target,
        "tasks": {name: dict(SCORES) for name in kwargs["tasks"]},
        "limit": kwargs["limit"],
        "act_sparsity": 0.5,
        "act_rule": "topk",
    }


def test_list_tasks_prints_one_task_per_line(cli: Cli) -> None:
    result = cli("eval", "--list-tasks")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[: len(BUILTIN_TASKS)] == list(BUILTIN_TASKS)
    assert set(tasks_mod.HUB_TASKS) <= set(names)
    assert "chance 25%" in lines[names.index("next_sentence")]


def test_eval_tasks_json(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def recording(target: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return fake_evaluate(target, **kwargs)

    monkeypatch.setattr(cli_mod, "evaluator", lambda: recording)
    result = cli("eval", "tiny-random", "--tasks", "spam_ham, last_word", "--limit", "5", "--json")
    assert result.exit_code == 0, result.stderr
    data = one_json(result.stdout)
    assert data["tasks"] == {"spam_ham": SCORES, "last_word": SCORES}
    assert (seen["tasks"], seen["limit"]) == (["spam_ham", "last_word"], 5)
    assert cli("eval", "tiny-random", "--tasks", "spam_ham").exit_code == 0
    assert seen["limit"] == 0  # each task's default
    text = cli("eval", "tiny-random", "--tasks", "spam_ham").stdout
    assert text.startswith("spam_ham  acc 60.0% ± 4.9  acc_norm 55.0%  n 100")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--tasks", "nope"), "unknown task 'nope': the built-in tasks are last_word, "),
        (("--tasks", "spam_ham", "--limit", "0"), "--limit must be an integer >= 1, got 0"),
        (("--tasks", "spam_ham", "--limit", "-3"), "--limit must be an integer >= 1, got -3"),
        (("--tasks", "spam_ham,,last_word"), "--tasks has an empty name"),
    ],
)
def test_eval_tasks_bad_input_exits_2(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], expected: str
) -> None:
    monkeypatch.setattr(cli_mod, "evaluator", lambda: fake_evaluate)
    result = cli("eval", "tiny-random", *args)
    assert result.exit_code == 2
    assert expected in one_error_line(result.stderr)


def test_hub_task_offline_without_its_data_exits_2(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import solver.io.models

    monkeypatch.setattr(cli_mod, "evaluator", lambda: fake_evaluate)
    monkeypatch.setattr(solver.io.models, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(tasks_mod, "_cached", lambda task: False)
    result = cli("eval", "tiny-random", "--tasks", "arc_easy", "--json")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "task 'arc_easy' needs the dataset allenai/ai2_arc (ARC-Easy)" in line
    assert "run it once online" in line
    assert json.loads(result.stdout)["category"] == "input"
    monkeypatch.setattr(tasks_mod, "_cached", lambda task: True)  # in the cache: it runs
    assert cli("eval", "tiny-random", "--tasks", "arc_easy").exit_code == 0


def test_eval_needs_a_target(cli: Cli) -> None:
    result = cli("eval")
    assert result.exit_code == 2 and "missing TARGET" in one_error_line(result.stderr)


def test_prune_tasks_bad_input_exits_2(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from duogpt_tui import runner
    from solver.run import pipeline

    monkeypatch.setattr(runner, "preflight", pipeline.preflight)
    result = cli("prune", *FAST, "--tasks", "hellaswagg")
    assert result.exit_code == 2 and "unknown task 'hellaswagg'" in one_error_line(result.stderr)
    result = cli("prune", *FAST, "--tasks", "spam_ham", "--limit", "0")
    assert result.exit_code == 2 and "--limit must be an integer >= 1" in result.stderr
    assert cli.run_dirs() == [], "bad input leaves no run directory"


def test_prune_json_carries_protocol_and_tasks(cli: Cli) -> None:
    from tests.report import scripted

    cli.use(scripted.run_with_tasks())
    result = cli("prune", *FAST, "--tasks", "spam_ham", "--json")
    assert result.exit_code == 0, result.stderr
    data = one_json(result.stdout)
    assert data["protocol"]["text_sha256"] == scripted.PROTOCOL["text_sha256"]
    assert data["protocol"]["token_spans"] == [[0, 32], [500, 532]]
    assert data["tasks"]["pruned"]["spam_ham"]["acc"] == 0.55
    assert "pruned acc: spam_ham 55.0%" in cli("prune", *FAST, "--tasks", "spam_ham").stdout


def test_eval_of_an_old_run_directory_keeps_its_placement(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from solver.config import RunConfig

    seen: dict[str, Any] = {}

    def recording(target: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return {"model": target, "ppl": 1.0, "act_sparsity": 0.0, "protocol": {}}

    monkeypatch.setattr(cli_mod, "evaluator", lambda: recording)
    run = tmp_path / "old-run"
    run.mkdir()
    recorded = RunConfig(model="tiny-random", calib="notes.txt", eval="notes.txt").to_dict()
    del recorded["eval_placement"], recorded["tasks"], recorded["task_limit"]
    (run / "config.json").write_text(json.dumps(recorded))
    assert cli("eval", str(run)).exit_code == 0
    assert (seen["placement"], seen["calib_text"]) == ("first", "notes.txt")
    assert cli("eval", str(run), "--eval-placement", "spread").exit_code == 0
    assert seen["placement"] == "spread"
    assert cli("eval", "tiny-random").exit_code == 0
    assert (seen["placement"], seen["calib_text"]) == ("spread", None)
