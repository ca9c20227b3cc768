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
#: Seconds between two "still waiting" lines while polling (the first comes at once).
REPORT_SECONDS = 30.0

#: Ray Train settings for every run, read from the driver's environment as Ray Train asks
#: (it hands them on to its controller and workers); a value the user set is kept.
#: The preemption watcher is an actor Ray Train starts with `max_restarts=-1` and the worker
#: actors' handles as constructor arguments, which Ray core reports as an error line on every
#: run (`core_worker.cc ... PreemptionWatcher ... max_restarts > 0`, ray-project/ray#53727).
#: vlaunch does not use what it provides (`ray.train.get_preemption_info()`, a separate
#: preemption retry budget): a preempted node reaches the driver as SIGTERM (Kubernetes) or
#: SIGUSR1/SIGTERM (Slurm), and the trainer checkpoints and exits 75 (docs/trainer.md).
RAY_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
#: The GCS port of a head that `ray.init` starts (`ray start --port` on the command line).
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"


@contextmanager
def local_cluster(*, num_cpus: int, num_gpus: int) -> Iterator[None]:
    """A new Ray cluster on this machine (never one `ray start` left running), stopped after.

    Its address is chosen here (a free GCS port) and given to every process of the job as
    RAY_ADDRESS: Ray Train's placement-group cleaner looks its cluster up through the State
    API, which without RAY_ADDRESS takes the latest cluster `ray start` recorded on this
    machine (`/tmp/ray/ray_current_cluster`, often one that has stopped): it then waits 40 s
    for a dead GCS and prints a traceback at the end of a successful run. With the address it
    fails fast and quietly (no dashboard here), as it should."""
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    previous = os.environ.get(GCS_PORT_ENV)
    os.environ[GCS_PORT_ENV] = str(port)  # read by the GCS that ray.init starts
    t0 = time.perf_counter()
    try:
        ray_init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            cluster_address=address,
            # Idle workers Ray starts for the driver would only take CPU from the start-up:
            # no actor of a run can use them (Ray Train's actors have runtime environments
            # of their own, and the job's has RAY_ADDRESS).
            _system_config={"prestart_worker_first_driver": False},
        )
        logger.info("started a local Ray cluster in %.1fs", time.perf_counter() - t0)
    finally:
        if previous is None:
            os.environ.pop(GCS_PORT_ENV, None)
        else:
            os.environ[GCS_PORT_ENV] = previous
    try:
        yield
    finally:
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


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


def ray_init(*, cluster_address: str | None = None, **kwargs: Any) -> None:
    """`ray.init` with the job's Ray-internal logging at ERROR (its INFO/WARNING chatter in
    every worker drowns the training log; `vlaunch -v`: WARNING); vlaunch's own lines and
    Ray's errors still show. The driver's logging setup (the CLI's) is kept as it was.

    `cluster_address` (HOST:PORT of the GCS) becomes RAY_ADDRESS for every process of the
    job, so that whatever looks the cluster up by itself finds this one (see local_cluster)."""
    from vlaunch_core.quiet import verbose

    for key, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    env_vars = {"RAY_ADDRESS": cluster_address} if cluster_address else {}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        ray.init(
            log_to_driver=True,
            logging_level=logging.WARNING,
            logging_config=ray.LoggingConfig(
                encoding="TEXT", log_level="WARNING" if verbose() else "ERROR"
            ),
            runtime_env={"env_vars": env_vars} if env_vars else None,
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
    started = time.monotonic()
    reported = -REPORT_SECONDS
    host_port = _host_port(address)
    while True:
        if reachable(address):
            try:
                ray_init(address=address, cluster_address=host_port)
                return
            except ConnectionError as e:
                error = str(e)
        else:
            error = "nothing listens there"
        now = time.monotonic()
        if now >= deadline:
            raise UserError(
                f"no Ray cluster to join at '{address}' after {now - started:.0f} s: {error}",
                hint="start one first (`ray start --head` on the head node; the Slurm "
                "scripts and the Helm chart do), or pass --ray-address HOST:6379",
            )
        if now - reported >= REPORT_SECONDS:
            reported = now
            logger.info(
                "waiting for the Ray head at %s (%s); giving up in %.0f s, at %s",
                address,
                error,
                deadline - now,
                _clock(deadline),
            )
        time.sleep(POLL_SECONDS)  # polling an external service


def _host_port(address: str) -> str | None:
    """HOST:PORT of a Ray address, or None for `auto` and other forms."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return address if sep and port.isdigit() and host and "://" not in address else None


def _clock(deadline: float) -> str:
    """A monotonic deadline as wall-clock time (HH:MM:SS)."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() + deadline - time.monotonic()))


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
    reported = -REPORT_SECONDS
    while True:
        have: dict[str, Any] = ray.cluster_resources()
        missing = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
        if not missing:
            return
        now = time.monotonic()
        if now >= deadline:
            raise UserError(
                f"the Ray cluster offers {_fmt(have, need)} but the plan needs "
                f"{_fmt(need, need)} (waited {wait_seconds:.0f}s for workers to join)",
                hint="check that every node ran `ray start --address=...`, or match "
                "resources.nodes / gpus_per_node to the cluster",
            )
        if now - reported >= REPORT_SECONDS:
            reported = now
            logger.info(
                "waiting for the cluster: %s of %s; giving up in %.0f s, at %s",
                _fmt(have, need),
                _fmt(need, need),
                deadline - now,
                _clock(deadline),
            )
        time.sleep(POLL_SECONDS)  # polling an external cluster, not synchronising our own work


def _fmt(resources: dict[str, Any], keys: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys)
