"""The training order over sharded sources: world-size free, resumable, block-local, and a
rank opens only the shards its own samples are in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.source_fixtures import build_tar
from vlaunch_core.data.order import MixtureOrder, PartLayout
from vlaunch_core.data.sampler import GlobalBatchSampler, epoch_order

# A JSON file (no blocks), a Parquet file (row groups of 4, shuffled inside), tar shards
# (8 samples each, read in order), the tar dataset repeated twice.
PARTS = [
    PartLayout(30),
    PartLayout(20, 1, (4, 4, 4, 4, 4), sequential=False),
    PartLayout(24, 2, (8, 8, 8), sequential=True),
]


def test_without_blocks_the_order_is_the_plain_permutation() -> None:
    order = MixtureOrder([PartLayout(30), PartLayout(20, 3)], seed=7)
    for epoch in range(3):
        assert np.array_equal(order.epoch(epoch), epoch_order(90, 7, epoch))
    assert np.array_equal(MixtureOrder(PARTS, 7, shuffle=False).epoch(0), np.arange(98))


def _stream_of(order: MixtureOrder, positions: np.ndarray, k: int) -> list[int]:
    """The records (with their pass) part k gets, in epoch order."""
    start = order.starts[k]
    end = start + order.parts[k].size * order.parts[k].repeat
    return [int(i) - start for i in positions if start <= i < end]


def test_blocked_parts_keep_their_places_and_visit_blocks_in_turn() -> None:
    order = MixtureOrder(PARTS, seed=3)
    plain = epoch_order(order.total, 3, 1)
    got = order.epoch(1)
    assert sorted(got.tolist()) == list(range(order.total))  # still a permutation
    part_of = lambda a: np.searchsorted(order.starts, a, side="right") - 1  # noqa: E731
    assert np.array_equal(part_of(plain), part_of(got))  # every part keeps its places
    assert np.array_equal(got[part_of(got) == 0], plain[part_of(plain) == 0])  # JSON untouched
    tar = _stream_of(order, got, 2)
    assert len(tar) == 48
    for r in range(2):  # each pass: whole shards, each in storage order
        one = [x - 24 * r for x in tar[24 * r : 24 * (r + 1)]]
        shards = [one[i : i + 8] for i in range(0, 24, 8)]
        assert all(s == list(range(s[0], s[0] + 8)) and s[0] % 8 == 0 for s in shards)
        assert sorted(s[0] for s in shards) == [0, 8, 16]
    parquet = _stream_of(order, got, 1)
    groups = [parquet[i : i + 4] for i in range(0, 20, 4)]
    assert all(len({x // 4 for x in g}) == 1 for g in groups)  # one row group at a time
    assert sorted(parquet) == list(range(20))
    assert any(g != sorted(g) for g in groups)  # shuffled within row groups
    assert not np.array_equal(order.epoch(2), got)


def _steps(world: int, start: int, steps: int, order: MixtureOrder) -> list[list[int]]:
    """The samples of each optimizer step from `start`, gathered over `world` ranks."""
    out: list[list[int]] = [[] for _ in range(steps)]
    for rank in range(world):
        sampler = GlobalBatchSampler(
            order.total, global_batch_size=12, micro_batch_size=2, rank=rank,
            world_size=world, seed=order.seed, order=order,
        )  # fmt: skip
        sampler.start_at(start)
        batches = iter(sampler)
        for step in range(steps):
            if (start + step) % sampler.steps_per_epoch == 0 and start + step > start:
                sampler.set_epoch(sampler.epoch + 1)  # as the trainer rolls epochs
                batches = iter(sampler)
            for _ in range(sampler.grad_accum):
                out[step] += next(batches)
    return [sorted(s) for s in out]


@pytest.mark.parametrize("world", [2, 3, 6])
def test_any_world_size_and_any_resume_step_reads_the_same_samples(world: int) -> None:
    order = MixtureOrder(PARTS, seed=11)
    straight = _steps(1, 0, 12, order)  # 8 steps per epoch: crosses into epoch 1
    assert _steps(world, 0, 12, order) == straight
    assert _steps(world, 5, 7, order) == straight[5:]
    assert _steps(world, 9, 3, order) == straight[9:]


def test_a_rank_opens_only_the_shards_of_its_samples(tmp_path: Path, shapes: Path) -> None:
    from vlaunch_core.data.formats import Fields
    from vlaunch_core.data.sources.tar import TarSource

    built = build_tar(shapes, tmp_path / "shards", n=23, per_shard=4)  # 24 samples, 6 shards
    source = TarSource("t", built.entry["data_path"], Fields(), shapes)
    blocks = source.blocks()
    assert blocks == [4] * 6
    order = MixtureOrder([PartLayout(len(source), 1, tuple(blocks), True)], seed=1)
    sampler = GlobalBatchSampler(
        len(source), global_batch_size=4, micro_batch_size=2, rank=1, world_size=2,
        seed=1, order=order,
    )  # fmt: skip
    sampler.start_at(2)  # a resumed rank: from step 2 on
    batches = iter(sampler)
    mine = [j for _ in range(2) for j in next(batches)]  # steps 2 and 3
    for j in mine:
        assert source.read(j).error is None
    needed = {source.files[j // 4] for j in mine}
    assert source.opened == needed
    assert len(needed) <= 2 < len(source.files)  # two global batches: two shards at most
    assert len(source._cache_open) <= 2 and len(source._cache_index) <= 2  # bounded
