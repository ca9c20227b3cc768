"""Data sources benchmark, tiny: the tar-shard mixture's loader and trainer rows."""

from __future__ import annotations

from pathlib import Path

from bench import data_sources, report


def test_tar_shards_row(bench_root: Path) -> None:
    result = data_sources.run(
        samples=64, mixtures=("webdataset",), batches=2, passes=1, train_steps=2,
        train_warmup=1, root=bench_root,
    )  # fmt: skip
    (row,) = result["rows"]
    assert row["mixture"] == "webdataset" and row["samples"] == 64
    assert row["samples_per_s"] > 0 and row["trainer_samples_per_s"] > 0
    ratio = row["samples_per_s"] / row["trainer_samples_per_s"]  # of the rounded rates
    assert abs(row["ratio"] - ratio) <= 0.01 + 0.05 * ratio
    assert row["rss_rank_mib"] > 100  # torch and the processor are in
    shards = bench_root / "data_sources" / "data-64" / "shards"
    assert sorted(p.name for p in shards.glob("*.tar")) == ["a-0000.tar", "b-0000.tar"]
    page = report.data_sources(result)
    assert f"| {row['ratio']:.2f} |" in page and "64 per format" in page
