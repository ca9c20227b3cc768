"""Ray Train's trainer without the helper actors a vlaunch run does not use
(trainer/ray_trainer.py): which callbacks and scaling policy it hands to Ray Train's
controller, and, on a real local Ray cluster, which actors a run then starts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)
from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy
from ray.train.v2._internal.execution.scaling_policy.scaling_policy import ResizeDecision
from ray.train.v2.api.config import RunConfig, ScalingConfig

from trainer.ray_trainer import FixedWithoutAutoscaler, VlaunchTrainer

HELPERS = ("PlacementGroupCleaner", "DatasetManager", "_AutoscalingCoordinatorActor")
"""The actor classes an own cluster's run leaves out (Ray's names)."""


def _noop() -> None:
    return None


def _trainer(tmp_path: Path, *, own_cluster: bool, **kwargs: Any) -> VlaunchTrainer:
    return VlaunchTrainer(
        _noop,
        own_cluster=own_cluster,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="t", storage_path=str(tmp_path)),
        **kwargs,
    )


def _kinds(callbacks: list[Any]) -> set[type]:
    return {type(c) for c in callbacks}


def test_own_cluster_leaves_out_the_cleaner_and_the_dataset_manager(tmp_path: Path) -> None:
    kinds = _kinds(_trainer(tmp_path, own_cluster=True)._create_default_callbacks())
    assert DatasetsCallback not in kinds
    assert PlacementGroupCleanerCallback not in kinds
    # everything else Ray Train sets up is still there (the backend, the accelerators, ...)
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    default = DataParallelTrainer(
        _noop,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="t", storage_path=str(tmp_path)),
    )._create_default_callbacks()
    assert _kinds(default) - kinds == {DatasetsCallback, PlacementGroupCleanerCallback}


def test_a_cluster_that_outlives_the_run_keeps_its_cleaner(tmp_path: Path) -> None:
    kinds = _kinds(_trainer(tmp_path, own_cluster=False)._create_default_callbacks())
    assert PlacementGroupCleanerCallback in kinds
    assert DatasetsCallback not in kinds  # no Ray Dataset: nothing to hand out


def test_ray_datasets_keep_their_manager(tmp_path: Path) -> None:
    import ray.data

    # a dataset factory, as Ray Train takes them (not called here: no cluster needed)
    datasets = {"train": lambda: ray.data.range(1)}
    trainer = _trainer(tmp_path, own_cluster=True, datasets=datasets)
    assert DatasetsCallback in _kinds(trainer._create_default_callbacks())


def test_the_policy_without_autoscaler_decides_as_the_fixed_one_and_requests_nothing() -> None:
    config = ScalingConfig(num_workers=3)
    policy = FixedWithoutAutoscaler(config)
    policy.after_controller_start(train_run_context=None)
    assert policy._coordinator_client is None  # no AutoscalingCoordinator reached
    decision = policy.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision) and decision.num_workers == 3
    asyncio.run(policy.before_controller_shutdown())  # no request to cancel
    assert isinstance(policy, FixedScalingPolicy)


@pytest.mark.ray
def test_a_run_on_its_own_cluster_starts_no_helper_actor(tmp_path: Path) -> None:
    # Real Ray: two runs of a function that does nothing on one local cluster, the one
    # `vlaunch local` starts: first as `vlaunch local` runs it, then with Ray Train's own
    # `DataParallelTrainer`; the actors each run started are read from the GCS.
    from ray._private import state
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from trainer.ray_cluster import local_cluster

    def classes_since(seen: set[str]) -> set[str]:
        return {a["ActorClassName"] for i, a in state.actors().items() if i not in seen}

    with local_cluster(num_cpus=1, num_gpus=0):
        before = set(state.actors())
        _trainer(tmp_path / "own", own_cluster=True).fit()
        own = classes_since(before)
        before = set(state.actors())
        DataParallelTrainer(
            _noop,
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name="t", storage_path=str(tmp_path / "default")),
        ).fit()
        default = classes_since(before)
    assert {"TrainController", "RayTrainWorker", "SynchronizationActor"} <= own, own
    assert not own & set(HELPERS), own
    # what Ray Train starts by default has them all (the check above can fail)
    assert set(HELPERS) <= default, default
