"""Packing and grouping: exact waste on the length mixes, and a short real training run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import packing, packing_train, report


@pytest.mark.parametrize("mix", sorted(packing.MIXES))
def test_waste_orders_the_batchings(mix: str) -> None:
    result = packing.analyse(mix, num_samples=2048, micro=4, world=8, accum=4, seed=0)
    random, grouped, packed = (r for r in result["rows"])
    assert packed["padding_waste"] == 0
    assert 0 < grouped["padding_waste"] < random["padding_waste"] < 1
    for row in result["rows"]:
        assert row["waste_with_rank_imbalance"] >= row["padding_waste"]
        assert row["tokens"] == random["tokens"]  # the same samples in every batching


def test_diverse_mix_has_every_kind() -> None:
    lengths = packing.length_mix(4000, seed=1, mix="diverse")
    text_only = [n for n in lengths if n < 0]
    multi_image = [n for n in lengths if n > 2 * packing.IMAGE_TOKENS]
    captions = [n for n in lengths if 0 < n < packing.IMAGE_TOKENS + 40]
    assert 0.09 < len(text_only) / len(lengths) < 0.15
    assert multi_image and captions
    assert max(abs(n) for n in lengths) <= packing.MAX_LENGTH


def test_rank_imbalance_counts_the_slowest_rank() -> None:
    # one step, 2 ranks, accumulation 1: rank 0 holds 10 tokens, rank 1 holds 30
    row = packing.waste([[10], [30]], packed=True, world=2, accum=1)
    assert row["padding_waste"] == 0
    assert row["waste_with_rank_imbalance"] == pytest.approx(1 - 40 / 60, abs=1e-4)


def test_training_times_the_same_tokens_in_every_batching(bench_root: Path) -> None:
    random, packed = "random order, padded", "packing (one row per micro-batch)"
    result = packing_train.train_tokens_per_s(
        steps=3, warmup=1, repeats=1, num_samples=32, batchings=(random, packed), root=bench_root
    )
    rows = {row["batching"]: row for row in result["rows"]}
    assert list(rows) == [random, packed]
    # the same samples at every step: grouping and packing only change how they are batched
    assert rows[random]["tokens_timed"] == rows[packed]["tokens_timed"] > 0
    assert rows[packed]["padding_waste"] == 0 < rows[random]["padding_waste"]
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["step_time_s"] > 0 and row["runs"] == 1
    assert rows[random]["speedup"] == 1.0
    assert rows[packed]["speedup"] == pytest.approx(
        rows[packed]["tokens_per_s"] / rows[random]["tokens_per_s"], abs=1e-3
    )
    page = report.packing({**packing.run(num_samples=256), "training": result})
    assert f"| {packed} | 0.0% | {rows[packed]['tokens_timed']} |" in page


def test_runs_are_combined_step_by_step() -> None:
    """Each step's time is the median over the runs (a stalled run moves no total)."""

    def run(times: list[float]) -> list[dict[str, float]]:
        return [{"tokens_per_s": 100 / t, "step_time_s": t} for t in times]  # 100 tokens a step

    runs = [run([1.0, 2.0]), run([1.2, 9.0]), run([0.8, 2.2])]  # run 2 stalled at step 2
    combined = packing_train._combine_runs(runs)
    assert combined["tokens_timed"] == 200
    assert combined["tokens_per_s"] == pytest.approx(200 / (1.0 + 2.2), abs=0.1)
    with pytest.raises(RuntimeError, match="numbers of steps"):
        packing_train._combine_runs([run([1.0]), run([1.0, 2.0])])
