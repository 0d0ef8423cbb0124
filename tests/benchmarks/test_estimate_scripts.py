"""The on-paper estimates for 7B, 13B and 70B models (issue 14 item 5) and the discovery-cost
script's options (issue 11)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import scale_estimates as se


def test_the_table_has_every_model_on_1_and_4_gpus(tmp_path: Path) -> None:
    out = tmp_path / "scale.md"
    assert se.main(["--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| LLaMA")]
    assert [row.split("|")[1:3] for row in rows] == [
        [f" {m.name} ", f" {n} "] for m in se.MODELS for n in (1, 4)
    ]
    assert "does not fit" in rows[4]  # 70B in bfloat16 is 138 GB: no room on one H200 beside it


def test_four_ranks_are_faster_but_not_four_times() -> None:
    for model in se.MODELS:
        one = sum(se.block_seconds(model, 128 * 2048, 1, 0.25).values())
        four = sum(se.block_seconds(model, 128 * 2048, 4, 0.25).values())
        assert one / 4 < four < one  # the solves of the o and down groups do not split


def test_offload_keeps_one_block_on_the_device() -> None:
    none, cpu, host = se.memory_gb(se.MODELS[2], 1)
    assert cpu < 0.2 * none
    assert host > 138  # the bfloat16 weights wait in host memory


def test_discovery_cost_refuses_bad_options() -> None:
    from benchmarks import discovery_cost

    assert discovery_cost.main(["--repeats", "0"]) == 2
    assert discovery_cost.main(["--run-seconds", "-1"]) == 2


def test_default_command_table_and_bad_options() -> None:
    from benchmarks import default_command as dc

    results = {
        "duogpt": {
            "ppl": 210.0,
            "ppl_dense": 70.0,
            "ppl_dense_act": 105.0,
            "wall_s": 96.4,
            "peak_rss_mb": 1250.0,
        },
        "wanda": {"ppl": 280.0, "wall_s": 80.0, "peak_rss_mb": 1200.0},
    }
    rows = [line.split("|")[1:-1] for line in dc.render(results).splitlines()[2:]]
    assert [cells[0].strip() for cells in rows] == [
        "dense (no weight pruning, X0%)",
        "dense + X50%",
        "duogpt",
        "wanda",
    ]
    assert [cells[2].strip() for cells in rows] == ["1.00", "1.50", "3.00", "4.00"]
    assert rows[2][3].strip() == "96" and rows[3][4].strip() == "1200"
    assert dc.main(["--methods", " , "]) == 2
