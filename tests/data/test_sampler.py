"""The training sampler: deterministic, resumable mid-epoch, re-shardable across world sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaunch_core.data.sampler import EvalBatchSampler, GlobalBatchSampler
from vlaunch_core.errors import UserError


def steps(
    world: int,
    micro: int,
    *,
    n: int = 100,
    g: int = 8,
    seed: int = 3,
    epoch: int = 0,
    start: int = 0,
    lengths: list[int] | None = None,
) -> list[list[int]]:
    """The samples of every optimizer step, gathered from all ranks in micro-batch order."""
    ranks = []
    for rank in range(world):
        s = GlobalBatchSampler(
            n,
            global_batch_size=g,
            micro_batch_size=micro,
            rank=rank,
            world_size=world,
            seed=seed,
            group_by_length=lengths is not None,
            lengths=lengths,
        )
        s.set_epoch(epoch)
        s.start_step = start
        ranks.append(list(s))
    accum = g // (micro * world)
    out = []
    for step in range(len(ranks[0]) // accum):
        samples: list[int] = []
        for a in range(accum):
            for r in range(world):
                samples += ranks[r][step * accum + a]
        out.append(samples)
    return out


def test_deterministic_and_epochs_differ() -> None:
    assert steps(1, 2) == steps(1, 2)
    assert steps(1, 2, epoch=1) != steps(1, 2)
    assert steps(1, 2, seed=4) != steps(1, 2)
    every = [i for step in steps(1, 2) for i in step]
    assert len(every) == len(set(every)) == 96  # 12 full global batches, no repeats


@settings(max_examples=40, deadline=None)
@given(
    micro=st.sampled_from([1, 2, 4]),
    world=st.sampled_from([1, 2, 4]),
    n=st.integers(16, 200),
    seed=st.integers(0, 10**6),
)
def test_each_step_holds_the_same_samples_whatever_the_world_size(
    micro: int, world: int, n: int, seed: int
) -> None:
    if 16 % (micro * world):
        return
    ref = steps(1, 16, n=n, g=16, seed=seed)
    got = steps(world, micro, n=n, g=16, seed=seed)
    assert [sorted(s) for s in got] == [sorted(s) for s in ref]


def test_resume_mid_epoch_continues_exactly() -> None:
    full = GlobalBatchSampler(
        100, global_batch_size=8, micro_batch_size=2, world_size=2, rank=1, seed=9
    )
    full.set_epoch(1)
    every = list(full)
    resumed = GlobalBatchSampler(
        100, global_batch_size=8, micro_batch_size=2, world_size=2, rank=1, seed=9
    )
    resumed.start_at(full.steps_per_epoch + 5)  # epoch 1, step 5
    assert (resumed.epoch, resumed.start_step) == (1, 5)
    assert len(resumed) == len(every) - 5 * 2
    assert list(resumed) == every[5 * 2 :]


def test_resume_on_a_different_world_size() -> None:
    before = steps(4, 1, g=8, start=0)
    after = steps(2, 2, g=8, start=7)
    assert [sorted(s) for s in after] == [sorted(s) for s in before[7:]]


def test_group_by_length_keeps_steps_and_groups_modality() -> None:
    lengths = [(i * 37) % 50 + 1 for i in range(96)]
    lengths = [-v if i % 3 == 0 else v for i, v in enumerate(lengths)]  # text-only samples
    plain = steps(2, 2, n=96, g=16)
    grouped = steps(2, 2, n=96, g=16, lengths=lengths)
    assert [sorted(s) for s in grouped] == [sorted(s) for s in plain]
    for step in grouped:
        micro = [step[i : i + 2] for i in range(0, 16, 2)]
        mixed = [m for m in micro if len({lengths[i] < 0 for i in m}) > 1]
        assert len(mixed) <= 1  # only where the two modalities meet
        keys = [(lengths[i] < 0, -abs(lengths[i])) for i in step]
        assert keys == sorted(keys)


def test_bad_configurations_are_user_errors() -> None:
    with pytest.raises(UserError, match="not a multiple"):
        GlobalBatchSampler(100, global_batch_size=10, micro_batch_size=4)
    with pytest.raises(UserError, match="fewer than one global batch"):
        GlobalBatchSampler(5, global_batch_size=8, micro_batch_size=8)


def test_eval_sampler_shards_without_repeats() -> None:
    got = []
    lens = []
    for rank in range(3):
        s = EvalBatchSampler(10, micro_batch_size=2, rank=rank, world_size=3)
        batches = list(s)
        lens.append(len(s))
        assert len(batches) == len(s)
        got += [i for b in batches for i in b]
    assert sorted(got) == list(range(10))
    assert lens == [2, 2, 2]
