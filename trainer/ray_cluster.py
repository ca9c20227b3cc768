"""The Ray cluster a run trains on: a new one on this machine (`vlaunch local`), or the one a
Slurm job script or the Helm chart started (`vlaunch run`), joined and waited for.

The launcher reaches Ray only through these context managers (it never imports ray itself):

    with local_cluster(num_cpus=8, num_gpus=2):
        run_driver(spec, plan)
    with joined_cluster(address, plan, wait_seconds=600):
        run_driver(spec, plan)
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import ray

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan

logger = logging.getLogger(__name__)

#: Seconds between two looks at a cluster that is still forming (an external service).
POLL_SECONDS = 2.0


LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""Ray Train settings of a run on this machine (unless set in the environment): no preemption
watcher (an extra actor process polling for spot-instance preemption, which a workstation
does not have); Ray hands these variables to its Train controller."""


@contextmanager
def local_cluster(*, num_cpus: int, num_gpus: int) -> Iterator[None]:
    """A new Ray cluster on this machine (never one `ray start` left running), stopped after."""
    added = {k: v for k, v in LOCAL_TRAIN_ENV.items() if k not in os.environ}
    os.environ.update(added)
    t0 = time.perf_counter()
    try:
        ray_init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
        logger.info("started a local Ray cluster in %.1fs", time.perf_counter() - t0)
        yield
    finally:
        ray.shutdown()
        for k in added:
            os.environ.pop(k, None)


@contextmanager
def joined_cluster(address: str, plan: Plan, *, wait_seconds: float) -> Iterator[None]:
    """The running cluster at `address`, once it offers the plan's devices (nodes join after
    the head); both waits together take at most `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    connect(address, deadline)
    try:
        wait_for_resources(plan, max(0.0, deadline - time.monotonic()))
        yield
    finally:
        ray.shutdown()


def ray_init(**kwargs: Any) -> None:
    """`ray.init` with the job's Ray-internal logging at ERROR (its INFO/WARNING chatter in
    every worker drowns the training log); vlaunch's own lines and Ray's errors still show.
    The driver's logging setup (the CLI's) is kept as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        ray.init(
            log_to_driver=True,
            logging_level=logging.WARNING,
            logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"),
            **kwargs,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def connect(address: str, deadline: float) -> None:
    """`ray.init(address)`, retried until `deadline` (the head may still be starting).

    A HOST:PORT address is probed with a plain TCP connect first: `ray.init` itself keeps
    retrying an unreachable head for minutes."""
    error = ""
    while True:
        if reachable(address):
            try:
                ray_init(address=address)
                return
            except ConnectionError as e:
                error = str(e)
        else:
            error = "nothing listens there"
        if time.monotonic() >= deadline:
            raise UserError(
                f"no Ray cluster to join at '{address}': {error}",
                hint="start one first (`ray start --head` on the head node; the Slurm "
                "scripts and the Helm chart do), or pass --ray-address HOST:6379",
            )
        logger.info("waiting for the Ray head at %s", address)
        time.sleep(POLL_SECONDS)  # polling an external service


def reachable(address: str) -> bool:
    """Whether HOST:PORT accepts TCP connections (other address forms: assumed yes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False


def needed_resources(plan: Plan) -> dict[str, float]:
    """The Ray resources the plan's workers take together."""
    world = plan.world
    if world.profile.is_gpu:
        return {"GPU": float(world.world_size)}
    return {"CPU": float(world.world_size)}


def wait_for_resources(plan: Plan, wait_seconds: float) -> None:
    """Wait until the cluster offers the plan's devices."""
    need = needed_resources(plan)
    deadline = time.monotonic() + wait_seconds
    while True:
        have: dict[str, Any] = ray.cluster_resources()
        missing = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise UserError(
                f"the Ray cluster offers {_fmt(have, need)} but the plan needs "
                f"{_fmt(need, need)} (waited {wait_seconds:.0f}s for workers to join)",
                hint="check that every node ran `ray start --address=...`, or match "
                "resources.nodes / gpus_per_node to the cluster",
            )
        logger.info("waiting for the cluster: %s of %s", _fmt(have, need), _fmt(need, need))
        time.sleep(POLL_SECONDS)  # polling an external cluster, not synchronising our own work


def _fmt(resources: dict[str, Any], keys: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys)
