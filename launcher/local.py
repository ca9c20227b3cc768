"""The local backend and the in-cluster entry point: plan, (start or join) Ray, run the driver.

- `run_local`: `vlaunch local` starts a Ray cluster on this machine sized to the plan (GPUs,
  or one CPU per worker on the `cpu` profile), runs, and stops it.
- `run_on_cluster`: `vlaunch run` joins the Ray cluster that a Slurm job script or the Helm
  chart started, waits for its workers to join, and runs the driver there.

Both refuse before starting anything when the plan does not fit, and return the driver's
exit status: 0 finished, 75 stopped with a resumable checkpoint (EX_TEMPFAIL), 1 failed.
Nothing here imports torch or ray at module level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


def local_gpu_count() -> int:
    """GPUs nvidia-smi lists (respecting CUDA_VISIBLE_DEVICES), without importing torch."""
    from vlaunch_core.profiles import nvidia_smi

    return len(nvidia_smi("index"))


def plan_or_refuse(spec: JobSpec) -> Plan:
    """The plan of `spec`, or a user error when its memory prediction does not fit."""
    from vlaunch_core.plan import make_plan

    plan = make_plan(spec)
    if not plan.fits:
        notes = "; ".join(plan.notes) or "the memory prediction does not fit"
        raise UserError(
            f"the plan for '{spec.name}' does not fit: {notes}",
            hint="see `vlaunch plan` for the numbers",
            exit_code=1,
        )
    return plan


def _check_local_devices(spec: JobSpec, plan: Plan) -> None:
    world = plan.world
    if world.nodes > 1:
        raise UserError(
            f"resources.nodes={world.nodes}: `vlaunch local` runs on this machine only",
            hint="use `vlaunch slurm` or `vlaunch k8s` for several nodes, or set resources.nodes=1",
        )
    if not world.profile.is_gpu:
        return
    have = local_gpu_count()
    if have < world.gpus_per_node:
        raise UserError(
            f"the plan needs {world.gpus_per_node} GPU(s) on this machine, nvidia-smi sees {have}",
            hint="use --gpus with at most that many, or --gpus 0 (or --workers N) to train "
            "on the CPU",
        )


def run_local(spec: JobSpec, *, show_plan: bool = True) -> int:
    """Start a local Ray cluster sized to the plan, train, print where the outputs are."""
    plan = plan_or_refuse(spec)
    _check_local_devices(spec, plan)
    if show_plan:
        from launcher.commands.plan import render

        render(spec, plan)
    import ray

    world = plan.world
    cores = os.cpu_count() or 1
    if not world.profile.is_gpu and world.world_size > cores:
        logger.warning("%d CPU workers on %d cores: they will share cores", world.world_size, cores)
    ray_init(
        address="local",  # always a new cluster, never one `ray start` left on this machine
        num_cpus=max(cores, world.world_size),
        num_gpus=world.gpus_per_node if world.profile.is_gpu else 0,
        include_dashboard=False,
    )
    try:
        from trainer.ray_host import run_driver

        code = run_driver(spec, plan)
    finally:
        ray.shutdown()
    print_outputs(spec, code)
    return code


def run_on_cluster(spec: JobSpec, *, address: str | None, wait_seconds: float) -> int:
    """Join a running Ray cluster, wait for the plan's workers, run the driver."""
    plan = plan_or_refuse(spec)
    import ray

    where = address or os.environ.get("RAY_ADDRESS") or "auto"
    deadline = time.monotonic() + wait_seconds
    connect(where, deadline)
    try:
        wait_for_resources(plan, max(0.0, deadline - time.monotonic()))
        from trainer.ray_host import run_driver

        code = run_driver(spec, plan)
    finally:
        ray.shutdown()
    print_outputs(spec, code)
    return code


def ray_init(**kwargs: Any) -> None:
    """`ray.init` with the job's Ray-internal logging at ERROR (its INFO/WARNING chatter in
    every worker drowns the training log); vlaunch's own lines and Ray's errors still show.
    The driver's logging setup (the CLI's) is kept as it was."""
    import ray

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
        if _reachable(address):
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
        time.sleep(2.0)  # polling an external service


def _reachable(address: str) -> bool:
    """Whether HOST:PORT accepts TCP connections (other address forms: assumed yes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False


def needed_resources(plan: Plan) -> dict[str, float]:
    world = plan.world
    if world.profile.is_gpu:
        return {"GPU": float(world.world_size)}
    return {"CPU": float(world.world_size)}


def wait_for_resources(plan: Plan, wait_seconds: float) -> None:
    """Wait until the cluster offers the plan's devices (nodes join after the head)."""
    import ray

    need = needed_resources(plan)
    deadline = time.monotonic() + wait_seconds
    have: dict[str, Any] = {}
    while True:
        have = ray.cluster_resources()
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
        time.sleep(2.0)  # polling an external cluster, not synchronising our own work


def _fmt(resources: dict[str, Any], keys: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys)


def print_outputs(spec: JobSpec, code: int) -> None:
    """Where the run's outputs are, and the held-out accuracy when there is one."""
    import json
    from pathlib import Path

    run_dir = Path(spec.output.dir).expanduser().absolute() / spec.name
    out = sys.stdout
    print(f"\nrun directory: {run_dir}", file=out)
    for label, name in (
        ("adapter", "adapter"),
        ("model", "model"),
        ("metrics", "metrics.jsonl"),
        ("loss curve", "loss.png"),
        ("tensorboard", "tensorboard"),
        ("evaluation", "eval.json"),
    ):
        if (run_dir / name).exists():
            print(f"  {label:<12} {run_dir / name}", file=out)
    try:
        ev = json.loads((run_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return
    before, after, chance = ev.get("accuracy_before"), ev.get("accuracy_after"), ev.get("chance")
    if before is not None or after is not None:

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.1%}"

        print(
            f"held-out exact match: before {pct(before)} -> after {pct(after)} "
            f"(chance {pct(chance)}, {ev.get('num_samples')} samples)",
            file=out,
        )
