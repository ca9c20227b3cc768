"""Ray Train's `DataParallelTrainer`, without the helper actors a vlaunch run has no use for.

Beside its controller and the workers, Ray Train V2 starts a process for each of these
actors, on every run:

- `DatasetManager` (its `DatasetsCallback`): hands Ray Data shards to the workers. vlaunch
  passes no Ray Dataset (the trainer reads its data itself), and the actor then serves
  nothing: left out whenever a trainer has no datasets.
- `PlacementGroupCleaner` (its `PlacementGroupCleanerCallback`): removes the run's
  placement group if the controller dies while the cluster lives on, by asking the State
  API once a second whether the controller is alive. On a cluster the launch started itself
  (`vlaunch local`) `ray.shutdown()` ends every actor and placement group with the run:
  left out there (kept on a cluster that outlives the run, `vlaunch run`).
- Ray Data's detached `AutoscalingCoordinator`, which the fixed scaling policy sends the
  run's resource request to (again every 20 s), for an autoscaler to act on. A cluster the
  launch started itself has no autoscaler: no request there, and no coordinator.

Each of these processes costs CPU while it waits (its main thread wakes every 10 ms to check
for signals, wired into Ray core: about 7 ms of CPU a second per process on the machine
`make bench` runs on), taken from the ranks when they keep every core busy
(docs/benchmarks.md, "Ray overhead"). `tests/trainer/test_ray_trainer.py` runs this trainer
and Ray Train's own on a real local cluster and checks which actors each starts.

The callbacks and the scaling policy are Ray Train's internals (`ray.train.v2._internal`, Ray
2.60 as locked): a re-lock that moves them fails this module's import and those tests.
Imports Ray Train, not torch: the scaling policy is unpickled by Ray Train's controller.
"""

from __future__ import annotations

from typing import Any

from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)
from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer


class FixedWithoutAutoscaler(FixedScalingPolicy):
    """The fixed scaling policy, for a cluster with no autoscaler: no resource requests."""

    def after_controller_start(self, train_run_context: Any) -> None:
        return None

    def _maybe_send_resource_request(self) -> None:
        return None

    def _send_resource_request(self) -> None:
        return None


class VlaunchTrainer(DataParallelTrainer):
    """`DataParallelTrainer` without the helpers above; `own_cluster`: the launch started
    the cluster and stops it after the run (`vlaunch local`)."""

    def __init__(self, *args: Any, own_cluster: bool, **kwargs: Any) -> None:
        self.own_cluster = own_cluster
        super().__init__(*args, **kwargs)

    def _create_default_callbacks(self) -> list[Any]:
        callbacks: list[Any] = super()._create_default_callbacks()
        left_out: tuple[type, ...] = () if self.datasets else (DatasetsCallback,)
        if self.own_cluster:
            left_out += (PlacementGroupCleanerCallback,)
        return [c for c in callbacks if not isinstance(c, left_out)]

    def _initialize_and_run_controller(self, **kwargs: Any) -> Any:
        policy = kwargs.get("scaling_policy")
        if self.own_cluster and type(policy) is FixedScalingPolicy:
            kwargs["scaling_policy"] = FixedWithoutAutoscaler(policy.scaling_config)
        return super()._initialize_and_run_controller(**kwargs)
