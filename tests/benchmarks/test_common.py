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
    reference = {
        **base,
        "method": "duogpt",
        "weight_sparsity": 0.5,
        "act_sparsity": 0.5,
        "eval_dense": False,
    }
    issue9 = [(label, c) for g, label, c in rows if g == "issue9"]
    assert len(issue9) == len(ablations.OVERRIDES["issue9"])
    for label, config in issue9:  # each row turns back only its own options
        changed = {k for k in config.keys() | reference.keys() if config.get(k) != reference.get(k)}
        assert changed == set(dict(ablations.OVERRIDES["issue9"])[label]), label
        assert common.config_key(config) != default, label


# --------------------------------------------------------------------- seeds


def fake_summary(config: dict[str, Any]) -> dict[str, Any]:
    """A finished run whose perplexity depends on its method, sparsities and seed."""
    ppl = 100.0 + 10 * config.get("seed", 0) + 50 * config.get("weight_sparsity", 0.5)
    ppl += {"magnitude": 1000.0, "wanda": 20.0, "sparsegpt": 30.0}.get(config["method"], 0.0)
    return {
        "status": "finished",
        "ppl_pruned": ppl,
        "weight_sparsity": 0.5,
        "eval_act_sparsity": config.get("act_sparsity", 0.5),
        "wall_s": 10.0 + config.get("seed", 0),
        "solve_s": 1.0,
        "speedup_bytes": {"dual": 2.0},
    }


def test_seeds_option_and_expansion() -> None:
    parser = common.arguments("test")
    assert parser.parse_args([]).seeds is None
    args = parser.parse_args(["--seeds", "0", "1", "2", "1"])
    assert common.seeds_of(args, common.FULL) == [0, 1, 2]
    assert common.seeds_of(parser.parse_args([]), common.FULL) == [0]
    runs = common.seeded({"method": "duogpt", "seed": 0}, [0, 1, 2])
    assert [(seed, config["seed"]) for seed, config in runs] == [(0, 0), (1, 1), (2, 2)]
    assert [s for s, _ in common.seeded({"method": "magnitude"}, [3, 4])] == [3]


def test_one_seed_keeps_the_old_configurations(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import ablations, methods, sweep

    monkeypatch.setenv(common.THREADS_ENV, "1")
    base = dict(common.FULL)
    assert methods.configurations(base) == methods.configurations(base, [0])
    assert all(config["seed"] == 0 for _, _, config in methods.configurations(base))
    three = methods.configurations(base, [0, 1, 2])
    magnitude = [c for _, label, c in three if label == "magnitude"]
    assert len(magnitude) == 3  # one per setting: it reads no calibration data
    assert len(three) == 3 * len(methods.configurations(base)) - 2 * len(magnitude)
    assert [label for label, _ in sweep.configurations(base, ["duogpt"], (0.5,), (0.5,))] == [
        "duogpt W50% X50%"
    ]
    rows = ablations.configurations(base, ["alpha"], ablations.CALIB, [0.125])
    assert len(ablations.distinct_configs(rows, [0, 1, 2])) == 3 * len(rows)


def test_methods_table_gives_mean_sd_and_each_seed() -> None:
    from benchmarks import methods
    from benchmarks.second_model import mean_sd

    base = {**common.FULL}
    runs = methods.configurations(base, [0, 1, 2])
    results = [(label, config, fake_summary(config)) for _, label, config in runs]
    reference = {"ppl_dense": 50.0, "ppl_dense_act": 60.0}
    text = methods.render(runs, results, reference, seeds=[0, 1, 2])
    header = text.splitlines()[0]
    assert "ppl mean ± sd" in header and "seed 0 | seed 1 | seed 2" in header
    duogpt = next(line for line in text.splitlines() if "| W50% + X50% | duogpt |" in line)
    assert mean_sd([125.0, 135.0, 145.0]) in duogpt  # "135.00 ± 10.00"
    assert "| 125.00 | 135.00 | 145.00 |" in duogpt and "| 2.70 |" in duogpt  # x dense of the mean
    magnitude = next(line for line in text.splitlines() if "| W50% + X50% | magnitude |" in line)
    assert "| 1125.00 | - | - |" in magnitude
    one = methods.render(
        runs[:1], results[:1], reference, seeds=[0]
    )  # one seed: the old single-value table
    assert "mean ± sd" not in one and "| 1125.00 | 22.50 |" in one


def test_sweep_and_ablation_tables_with_seeds() -> None:
    from benchmarks import ablations, sweep

    base = {**common.FULL}
    grid = sweep.configurations(base, ["duogpt", "sparsegpt"], (0.5, 0.7), (0.0,), [0, 1, 2])
    results = [(label, config, fake_summary(config)) for label, config in grid]
    text = sweep.render(results, {"ppl_dense": 50.0}, [0, 1, 2])
    assert "Means over the seeds" in text
    assert (
        "| duogpt | 0.50 | 0.00 | 0.500 | 135.00 ± 10.00 | 2.70 | 125.00 | 135.00 | 145.00 |"
        in text
    )
    rows = ablations.configurations(base, ["alpha"], ablations.CALIB, [0.125])
    distinct = ablations.distinct_configs(rows, [0, 1])
    by_key = {key: fake_summary(config) for key, config in distinct.items()}
    table = ablations.render(rows, by_key, 50.0, [0, 1])
    assert "ppl mean ± sd | x dense | seed 0 | seed 1 |" in table
    assert "**130.00 ± 7.07**" in table  # every alpha ties here: each is the group's best
