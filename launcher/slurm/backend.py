"""The Slurm backend: `SlurmRequest` (the sbatch script and the files beside it) through the
launch pipeline, then `sbatch --parsable`; status, logs and cancel by job id.

Every Slurm command goes through the injected `runner` (the real commands by default; the
tests drive the real local cluster with it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from launcher.pipeline import Backend, Scheduled
from launcher.slurm import control
from launcher.slurm.render import SlurmRequest, build_request, check_spec
from launcher.slurm.submit import Runner, partition_limits, run_command, submit, write_files

if TYPE_CHECKING:
    from launcher.jobs import JobStatus
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


class SlurmBackend(Backend[SlurmRequest]):
    """Jobs submitted with sbatch, or (`in_allocation`) run in the current allocation."""

    name = "slurm"

    def __init__(
        self,
        *,
        runner: Runner = run_command,
        in_allocation: bool = False,
        ask_cluster: bool = False,
    ) -> None:
        """`ask_cluster`: size the defaults for the partition's nodes as `sinfo` describes
        them (a submission); without, for the hardware profile's node (a dry-run: no
        cluster needed, the same script everywhere)."""
        self.runner = runner
        self.in_allocation = in_allocation
        self.ask_cluster = ask_cluster

    def check(self, spec: JobSpec) -> None:
        check_spec(spec, in_allocation=self.in_allocation)

    def submit_dryrun(self, spec: JobSpec, plan: Plan) -> SlurmRequest:
        node = None
        if self.ask_cluster and not self.in_allocation:
            node = partition_limits(spec.slurm.partition, self.runner)
        request = build_request(spec, plan, in_allocation=self.in_allocation, node=node)
        if self.ask_cluster:  # a dry-run lists them with what it would do
            for note in request.notes:
                logger.info("%s", note)
        return request

    def schedule(self, request: SlurmRequest) -> Scheduled:
        if self.in_allocation:
            write_files(request)
            logger.info("running %s in job %s", request.script_path, os.environ["SLURM_JOB_ID"])
            sys.stdout.flush()
            sys.stderr.flush()
            os.execvp("bash", ["bash", str(request.script_path)])
        job_id = submit(request, self.runner)
        return Scheduled(f"{control.BACKEND}:{job_id}", notes=f"log: {request.log_file(job_id)}")

    def describe(self, handle: str) -> JobStatus:
        return control.status(handle, runner=self.runner)

    def cancel(self, handle: str) -> JobStatus:
        return control.cancel(handle, runner=self.runner)

    def log_iter(self, handle: str, *, follow: bool = False) -> Iterator[str]:
        return control.log_iter(handle, follow=follow, runner=self.runner)
