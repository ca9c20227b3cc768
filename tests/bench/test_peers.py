"""The side-by-side benchmark's data is what docs/benchmarks.md says it is (no timing here:
the runs themselves take minutes and are `make bench`'s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import jobs, peers


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_each_image_is_the_stated_number_of_tokens(bench_root: Path, family: str) -> None:
    raised = jobs.small_vlm(family, 64, 1, max_pixels=peers.MAX_PIXELS, root=bench_root)
    assert peers.image_tokens(raised) == peers.IMAGE_TOKENS == 576 // peers.SCALE
    peers.check_image_tokens(raised)
    # the tiny processor's own budget (4,096 pixels) shrinks the same image: the bug this
    # guards against, where the page said 72 image tokens and the runs had 16
    default = jobs.small_vlm(family, 64, 1, root=bench_root)
    assert peers.image_tokens(default) < peers.IMAGE_TOKENS
    with pytest.raises(RuntimeError, match="image tokens"):
        peers.check_image_tokens(default)


@pytest.mark.parametrize("micro", [1, 2, 4, 8, 16])
def test_every_micro_batch_makes_the_same_global_batch(tmp_path: Path, micro: int) -> None:
    spec = peers.spec_for(tmp_path, tmp_path, tmp_path / "d.json", "lora", False, 3, micro)
    train = spec["train"]
    assert train["micro_batch_size"] == micro
    assert train["micro_batch_size"] * train["grad_accum_steps"] == peers.GLOBAL_BATCH
    assert train["global_batch_size"] == peers.GLOBAL_BATCH


@pytest.mark.parametrize("micro", [0, 3, 32])
def test_a_micro_batch_that_does_not_divide_the_global_batch_is_refused(micro: int) -> None:
    with pytest.raises(ValueError, match="does not divide"):
        peers.accumulation(micro)
