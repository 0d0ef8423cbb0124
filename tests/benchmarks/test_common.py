"""The benchmark scripts' shared runner: configuration keys, the result cache, parallel runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import common


def test_config_key_spells_out_defaults_and_normalises_eval_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(common.THREADS_ENV, "1")
    short = common.config_key({"method": "duogpt"})
    assert short == common.config_key({"method": "duogpt", "alpha": 0.125, "seqlen": 256})
    assert short == common.config_key({"method": "duogpt", "eval_seqlen": 256})
    assert short != common.config_key({"method": "duogpt", "eval_seqlen": 128})
    assert short != common.config_key({"method": "duogpt", "alpha": 0.25})
    monkeypatch.setenv(common.THREADS_ENV, "2")
    assert short != common.config_key({"method": "duogpt"}), "threads change results"


def test_cache_keeps_finished_runs_only_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    cache = common.ResultCache(path)
    cache.put({"alpha": 0.5}, {"status": "finished", "ppl_pruned": 12.5})
    cache.put({"alpha": 1.0}, {"status": "failed", "error": "boom"})
    again = common.ResultCache(path)
    found = again.get({"alpha": 0.5})
    assert found is not None and found["ppl_pruned"] == 12.5 and found["measured"]
    assert again.get({"alpha": 1.0}) is None
    assert common.ResultCache(None).get({"alpha": 0.5}) is None


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_all_keeps_order_runs_each_config_once_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    calls: list[float] = []

    def fake(config: dict[str, Any], timeout: float = 0) -> dict[str, Any]:
        calls.append(config["alpha"])
        return {"status": "finished", "ppl_pruned": 100 + config["alpha"]}

    monkeypatch.setattr(common, "run_isolated", fake)
    cache = common.ResultCache(tmp_path / "runs.jsonl")
    runs = [(f"a{a}", {"alpha": a}) for a in (0.0, 0.25, 0.5)]
    first = common.run_all(runs, jobs=jobs, cache=cache)
    assert [s["ppl_pruned"] for _, _, s in first] == [100.0, 100.25, 100.5]
    assert sorted(calls) == [0.0, 0.25, 0.5]
    second = common.run_all(
        [*runs, ("a1", {"alpha": 1.0})], jobs=jobs, cache=common.ResultCache(cache.path)
    )
    assert sorted(calls) == [0.0, 0.25, 0.5, 1.0], "cached runs are not run again"
    assert [s.get("cached", False) for _, _, s in second] == [True, True, True, False]


def test_ablation_rows_change_one_thing_and_keep_the_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import ablations

    monkeypatch.setenv(common.THREADS_ENV, "1")
    base = dict(common.FULL)
    rows = ablations.configurations(base, ablations.ALL_GROUPS, ablations.CALIB, [0.125])
    for _group, label, config in rows:
        assert config["eval_dense"] is False, label
        assert config.get("eval_seqlen", base["seqlen"]) == base["seqlen"], label
        assert config["eval_windows"] == base["eval_windows"], label
    keys = {common.config_key(config) for _, _, config in rows}
    default = common.config_key({**base, "eval_dense": False})
    assert default in keys, "the default configuration is one of the rows"
    calib = [c for g, _, c in rows if g == "calibration"]
    assert {(c["nsamples"], c["seqlen"]) for c in calib} == {
        (n, s) for n in ablations.CALIB[0] for s in ablations.CALIB[1]
    }
