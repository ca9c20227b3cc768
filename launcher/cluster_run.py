"""`vlaunch run`: the trainer driver inside a cluster job (Slurm job script, Helm chart).

It joins the Ray cluster the job started, waits for the plan's devices to join, and runs the
driver. It plans the job and applies the fit gate first.
Ray is joined by the trainer side (trainer/ray_cluster.py); nothing here imports ray.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from launcher.local import print_outputs

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec


def run_on_cluster(spec: JobSpec, *, address: str | None, wait_seconds: float) -> int:
    """Join a running Ray cluster, wait for the plan's workers, run the driver."""
    from vlaunch_core.plan import make_plan

    plan = make_plan(spec)
    plan.require_fit()
    from trainer.ray_cluster import joined_cluster
    from trainer.ray_host import run_driver

    where = address or os.environ.get("RAY_ADDRESS") or "auto"
    with joined_cluster(where, plan, wait_seconds=wait_seconds):
        code = run_driver(spec, plan)
    print_outputs(spec, code)
    return code
