"""`vlaunch run`: the trainer driver inside a cluster job (Slurm job script, Helm chart).

It joins the Ray cluster the job started, waits for the plan's devices to join, and runs the
driver with the launch's plan (`--plan PLAN.json`, written beside the job spec by `vlaunch
slurm` and `vlaunch k8s`): what the launch checked is what the workers train with. Without
`--plan` (a hand-written job script) it plans here. Either way the fit gate applies.
Ray is joined by the trainer side (trainer/ray_cluster.py); nothing here imports ray.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from launcher.local import print_outputs
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec


def run_on_cluster(
    spec: JobSpec, *, plan: Plan | None, address: str | None, wait_seconds: float
) -> int:
    """Join a running Ray cluster, wait for the plan's workers, run the driver."""
    from vlaunch_core.plan import make_plan

    if plan is None:
        plan = make_plan(spec)
    elif plan.name != spec.name:
        raise UserError(
            f"the plan is for the run '{plan.name}', the job spec is '{spec.name}'",
            hint="pass the plan.json written with this job spec (the launch writes both)",
        )
    plan.require_fit()
    from vlaunch_core.writable import check_run_dir_writable

    check_run_dir_writable(spec)
    from trainer.ray_cluster import joined_cluster
    from trainer.ray_host import run_driver

    where = address or os.environ.get("RAY_ADDRESS") or "auto"
    with joined_cluster(where, plan, wait_seconds=wait_seconds):
        code = run_driver(spec, plan)
    print_outputs(spec, code)
    return code
