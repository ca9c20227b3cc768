"""The plan the launch printed is the plan the workers train with.

A worker on a machine with less RAM would resolve `micro_batch_size: auto` to a smaller micro
batch on the `cpu` profile (this machine's RAM is its device memory): handed the launch's
plan, it trains with the launch's micro batch anyway. Only a different world size re-plans.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.trainer.helpers import write_job
from vlaunch_core.errors import UserError
from vlaunch_core.plan import Plan, make_plan, plan_for_world, read_plan
from vlaunch_core.spec_load import load_spec


def _small_machine(monkeypatch: pytest.MonkeyPatch, gib: float) -> None:
    """This process now sees a machine with `gib` GiB of RAM (what `cpu` profiles read)."""
    import vlaunch_core.profiles as profiles

    real = profiles._meminfo_bytes
    monkeypatch.setattr(
        profiles,
        "_meminfo_bytes",
        lambda key: int(gib * 2**30) if key in ("MemTotal", "MemAvailable") else real(key),
    )


@pytest.fixture
def auto_job(tmp_path: Path, shapes_data: Path) -> Path:
    return write_job(
        tmp_path,
        shapes_data,
        name="handover",
        train={"micro_batch_size": "auto", "max_steps": 1, "global_batch_size": 8},
        resources={"profile": "cpu", "gpus_per_node": 1},
        data={"max_length": 2048},
    )


def _smaller_machine_gib(job: Path, monkeypatch: pytest.MonkeyPatch, launch: Plan) -> float:
    """A RAM size on which `auto` resolves to a smaller micro batch than at the launch."""
    for gib in (8.0, 4.0, 2.0, 1.0, 0.5, 0.25):
        with monkeypatch.context() as m:
            _small_machine(m, gib)
            try:
                micro = make_plan(load_spec(job), estimate_memory=True).batch.micro_batch_size
            except UserError:  # nothing fits there: try the next size
                continue
        if micro < launch.batch.micro_batch_size:
            return gib
    pytest.fail("no machine size changes the auto micro batch")


def test_workers_train_with_the_launch_plan(
    auto_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.loop import Recipe

    launch = make_plan(load_spec(auto_job))
    gib = _smaller_machine_gib(auto_job, monkeypatch, launch)
    _small_machine(monkeypatch, gib)
    worker_spec = load_spec(auto_job)
    assert make_plan(worker_spec).batch.micro_batch_size < launch.batch.micro_batch_size
    recipe = Recipe(worker_spec, quiet=True, plan=launch)
    try:
        recipe.setup()
        assert recipe.batch == launch.batch
        assert recipe.plan is launch
        # the run directory keeps the plan it trained with
        assert read_plan(recipe.run_dir.plan_file).batch == launch.batch
    finally:
        recipe.cleanup()


def test_a_new_world_size_replans_and_says_so(
    auto_job: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = load_spec(auto_job, ["train.micro_batch_size=2"])
    launch = make_plan(spec)
    assert plan_for_world(launch, spec, launch.batch.world_size) is launch
    with caplog.at_level(logging.WARNING, logger="vlaunch_core.plan"):
        other = plan_for_world(launch, spec, 4)
    assert other.batch.world_size == 4
    assert other.batch.global_batch_size == launch.batch.global_batch_size
    assert "re-planned for a world of 4 ranks" in caplog.text


def test_plan_json_round_trips(auto_job: Path, tmp_path: Path) -> None:
    plan = make_plan(load_spec(auto_job))
    path = tmp_path / "plan.json"
    path.write_text(__import__("json").dumps(plan.to_json()))
    again = read_plan(path)
    assert again.to_json() == plan.to_json()
    path.write_text("{}")

    with pytest.raises(UserError, match=r"plan\.json"):
        read_plan(path)
