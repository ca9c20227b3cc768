"""The batch planner: exact, never silently rounded, with the nearest valid alternatives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaunch_core.planner import BatchPlanError, divisors, nearest_multiples, resolve_batch


def test_vila_16_nodes_x_8_gpus_accum_2() -> None:
    plan = resolve_batch(2048, 16 * 8, accum=2)
    assert (plan.micro_batch_size, plan.grad_accum_steps, plan.world_size) == (8, 2, 128)
    assert not plan.rounded


def test_vila_64_on_8x8_with_accum_2_fails_with_alternatives() -> None:
    with pytest.raises(BatchPlanError) as e:
        resolve_batch(64, 64, accum=2)
    assert e.value.suggestions["global_batch_size"] == [128, 256]
    assert 1 in e.value.suggestions["grad_accum_steps"]
    # valid device counts divide 64 / 2 = 32 (e.g. 4 nodes x 8 GPUs)
    assert e.value.suggestions["world_size"] == [16, 32]
    assert "128" in (e.value.hint or "")


def test_2048_on_7_gpus_fails_unless_rounding_asked() -> None:
    with pytest.raises(BatchPlanError) as e:
        resolve_batch(2048, 7)
    assert e.value.suggestions["global_batch_size"] == [2037, 2044, 2051, 2058]
    assert 8 in e.value.suggestions["world_size"]
    down = resolve_batch(2048, 7, rounding="down")
    assert down.global_batch_size == 2044 and down.rounded
    assert "rounded down to 2044" in down.notes[0]
    up = resolve_batch(2048, 7, rounding="up")
    assert up.global_batch_size == 2051


def test_auto_picks_largest_fitting_micro_batch() -> None:
    plan = resolve_batch(256, 8, fits=lambda micro: micro <= 6)
    # per device 32: divisors 1,2,4,8,16,32 -> largest <= 6 is 4
    assert (plan.micro_batch_size, plan.grad_accum_steps) == (4, 8)


def test_auto_nothing_fits_says_so() -> None:
    plan = resolve_batch(16, 2, fits=lambda micro: False)
    assert plan.micro_batch_size == 1 and plan.grad_accum_steps == 8
    assert "does not fit" in plan.notes[-1]


def test_explicit_micro_and_accum_must_multiply_out() -> None:
    with pytest.raises(BatchPlanError, match="not the global batch"):
        resolve_batch(64, 8, micro=4, accum=4)
    assert resolve_batch(64, 8, micro=4, accum=2).global_batch_size == 64


def test_single_gpu_and_two_3090s() -> None:
    assert resolve_batch(2, 1).micro_batch_size == 2
    two = resolve_batch(2, 2)
    assert (two.micro_batch_size, two.grad_accum_steps) == (1, 1)


def test_helpers() -> None:
    assert divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert nearest_multiples(10, 4) == [4, 8, 12, 16]


@settings(max_examples=400, deadline=None)
@given(
    global_bs=st.integers(1, 65536),
    world=st.integers(1, 1024),
    micro=st.one_of(st.none(), st.integers(1, 64)),
    accum=st.one_of(st.none(), st.integers(1, 64)),
    rounding=st.sampled_from(["exact", "down", "up"]),
    limit=st.integers(1, 128),
)
def test_property_every_plan_multiplies_out(
    global_bs: int, world: int, micro: int | None, accum: int | None, rounding: str, limit: int
) -> None:
    try:
        plan = resolve_batch(
            global_bs, world, micro=micro, accum=accum, rounding=rounding, fits=lambda m: m <= limit
        )
    except BatchPlanError as e:
        # Every suggested global size is valid for the same world / micro / accum.
        for g in e.suggestions.get("global_batch_size", []):
            if micro is None or accum is None:
                resolve_batch(g, world, micro=micro, accum=accum)
        return
    assert plan.micro_batch_size * plan.grad_accum_steps * plan.world_size == plan.global_batch_size
    if rounding == "exact":
        assert plan.global_batch_size == global_bs
    if micro is not None:
        assert plan.micro_batch_size == micro
    if accum is not None:
        assert plan.grad_accum_steps == accum
    if micro is None and accum is None and plan.micro_batch_size > 1:
        assert plan.micro_batch_size <= limit


@settings(max_examples=200, deadline=None)
@given(global_bs=st.integers(1, 8192), world=st.integers(1, 512))
def test_property_exact_never_rounds(global_bs: int, world: int) -> None:
    try:
        plan = resolve_batch(global_bs, world)
    except BatchPlanError:
        assert global_bs % world != 0
        return
    assert global_bs % world == 0 and plan.global_batch_size == global_bs
