"""Data pipeline: loader and trainer samples/s on tiny media sets (images: the whole path,
videos: the same path with 8 sampled frames instead of one image, slower to decode)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench import data_pipeline, report


def _rows(bench_root: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tiny-preprocessing and real-size rows of one media kind, checked."""
    result = data_pipeline.run(
        batches=2,
        repeats=1,
        train_steps=2,
        train_warmup=1,
        train_repeats=1,
        images=1,
        videos=2,
        kinds=(kind,),
        root=bench_root,
    )
    assert result["setup"]["trainer_steps"] == 2
    tiny, real = result["rows"]
    assert (tiny["media"], real["media"]) == (kind, kind)
    for row in (tiny, real):
        assert row["samples_per_s"] > 0 and row["tokens_per_sample"] > 0
        assert row["workers"] >= 0
    assert tiny["ratio"] == round(tiny["samples_per_s"] / tiny["trainer_samples_per_s"], 2)
    # the trainer's math threads: the cores its loader workers leave free
    assert tiny["trainer_threads"] == max(1, (os.cpu_count() or 1) - tiny["workers"])
    assert real["ratio"] is None and real["trainer_samples_per_s"] is None
    page = report.data_pipeline(result)
    assert f"| {tiny['ratio']:.2f} |" in page and "after the first 1 of 2" in page
    return tiny, real


def test_images(bench_root: Path) -> None:
    tiny, real = _rows(bench_root, "images")
    # Qwen2-VL-2B's preprocessing of a 640x480 image makes far more tokens than the tiny one
    assert real["tokens_per_sample"] > 2 * tiny["tokens_per_sample"]


@pytest.mark.slow
def test_videos(bench_root: Path) -> None:
    tiny, real = _rows(bench_root, "videos")
    # real-size preprocessing of 8 frames of 640x360 makes far more tokens than the tiny one
    assert real["tokens_per_sample"] > 5 * tiny["tokens_per_sample"]
