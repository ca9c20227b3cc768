"""The local backend: a Ray cluster on this machine sized to the plan, the trainer driver in
the foreground, the cluster stopped after.

It goes through the launch pipeline like every backend (launcher/pipeline.py: validate, plan,
fit gate), so nothing starts when the plan does not fit. `schedule` runs the job and returns
the driver's exit status: 0 finished, 75 stopped with a resumable checkpoint (EX_TEMPFAIL),
1 failed. The handle `local:<run directory>` works with `vlaunch status` (the run's
`status.json`) and `vlaunch cancel` (its STOP file: checkpoint at the next step, exit 75).
Ray is started by the trainer side (trainer/ray_cluster.py); nothing here imports ray.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.jobs import JobState, JobStatus
from launcher.pipeline import Backend, Scheduled
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

#: The run's `status.json` states (trainer/rundir.py) as vlaunch's.
RUN_STATES: dict[str, JobState] = {
    "running": JobState.RUNNING,
    "finished": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "stopped": JobState.CANCELLED,  # a stop was asked for (Ctrl-C, a signal, vlaunch cancel)
}


def local_gpu_count() -> int:
    """GPUs nvidia-smi lists (respecting CUDA_VISIBLE_DEVICES), without importing torch."""
    from vlaunch_core.profiles import nvidia_smi

    return len(nvidia_smi("index"))


def run_dir_of(spec: JobSpec) -> Path:
    """Where the run of `spec` writes (`<output.dir>/<name>`, absolute)."""
    return Path(spec.output.dir).expanduser().absolute() / spec.name


@dataclass(frozen=True)
class LocalRequest:
    """A run on this machine: the Ray cluster to start and the job to run on it."""

    spec: JobSpec
    plan: Plan
    num_cpus: int
    num_gpus: int

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.spec)

    def materialize(self) -> str:
        """The resolved job spec the driver runs."""
        return self.spec.to_yaml()

    def describe(self) -> str:
        b = self.plan.batch
        return "\n".join(
            (
                f"start a Ray cluster on this machine ({self.num_cpus} CPUs, {self.num_gpus} GPUs)",
                f"train '{self.spec.name}' in {self.run_dir} (micro batch "
                f"{b.micro_batch_size} x accumulation {b.grad_accum_steps} x world "
                f"{b.world_size})",
                "stop the Ray cluster",
            )
        )


class LocalBackend(Backend[LocalRequest]):
    """Trains in the foreground on this machine's GPUs, or on CPU worker processes."""

    name = "local"

    def __init__(self, *, show_plan: bool = True) -> None:
        self.show_plan = show_plan

    def check(self, spec: JobSpec) -> None:
        """The run directory must be writable here; nothing is written or started before."""
        from vlaunch_core.writable import check_run_dir_writable

        check_run_dir_writable(spec)

    def submit_dryrun(self, spec: JobSpec, plan: Plan) -> LocalRequest:
        world = plan.world
        if world.nodes > 1:
            raise UserError(
                f"resources.nodes={world.nodes}: `vlaunch local` runs on this machine only",
                hint="use `vlaunch slurm` or `vlaunch k8s` for several nodes, or set "
                "resources.nodes=1",
            )
        if world.profile.is_gpu:
            have = local_gpu_count()
            if have < world.gpus_per_node:
                raise UserError(
                    f"the plan needs {world.gpus_per_node} GPU(s) on this machine, nvidia-smi "
                    f"sees {have}",
                    hint="use --gpus with at most that many, or --gpus 0 (or --workers N) to "
                    "train on the CPU",
                )
        cores = os.cpu_count() or 1
        return LocalRequest(
            spec,
            plan,
            num_cpus=max(cores, world.world_size),
            num_gpus=world.gpus_per_node if world.profile.is_gpu else 0,
        )

    def schedule(self, request: LocalRequest) -> Scheduled:
        from trainer.ray_cluster import local_cluster
        from trainer.ray_host import run_driver

        spec, plan = request.spec, request.plan
        from trainer.resume_check import check_resume
        from trainer.rundir import RunDir

        # a spec the run cannot continue is refused before Ray starts (and nothing is written)
        check_resume(spec, plan, RunDir.for_spec(spec.output.dir, spec.name))
        if self.show_plan:
            from launcher.plan_table import print_plan

            print_plan(spec, plan)
        cores = os.cpu_count() or 1
        if not plan.world.profile.is_gpu and plan.world.world_size > cores:
            logger.warning(
                "%d CPU workers on %d cores: they will share cores", plan.world.world_size, cores
            )
        with local_cluster(num_cpus=request.num_cpus, num_gpus=request.num_gpus):
            code = run_driver(spec, plan, own_cluster=True)
        print_outputs(spec, code)
        return Scheduled(f"{self.name}:{request.run_dir}", exit_code=code)

    def describe(self, handle: str) -> JobStatus:
        from trainer.rundir import RunDir

        run_dir = RunDir(self._path(handle))
        status = run_dir.read_status()
        if status is None:
            raise UserError(
                f"no run status at {run_dir.status_file}",
                hint="the handle is local:<run directory> (`<output.dir>/<name>`), of a run "
                "that has started",
            )
        word = str(status.get("state", ""))
        detail = {k: v for k, v in status.items() if k != "state"}
        if run_dir.stop_file.exists():
            detail["stop_requested"] = run_dir.stop_file.read_text().strip()
        state = RUN_STATES.get(word, JobState.UNKNOWN)
        gone = owner_gone(status)
        if state is JobState.RUNNING and gone is not None:
            state, word = JobState.FAILED, "running (owner gone)"
            detail["lost"] = gone
        return JobStatus(
            backend=self.name,
            job_id=f"{self.name}:{run_dir.path}",
            state=state,
            backend_state=word,
            detail=detail,
        )

    def cancel(self, handle: str) -> JobStatus:
        """Ask a running run to checkpoint at its next step and stop (its STOP file)."""
        from trainer.rundir import RunDir

        status = self.describe(handle)
        if status.state is JobState.RUNNING:
            RunDir(self._path(handle)).request_stop("vlaunch cancel")
            return self.describe(handle)
        return status

    def log_iter(self, handle: str, *, follow: bool = False) -> Iterator[str]:
        run_dir = self._path(handle)
        raise UserError(
            f"a local run prints its log in the terminal that runs it: {handle}",
            hint=f"its metrics are in {run_dir / 'metrics.jsonl'}; `vlaunch report "
            f"{run_dir}` summarises them",
        )

    def _path(self, handle: str) -> Path:
        return Path(handle.removeprefix(f"{self.name}:")).expanduser().absolute()


def owner_gone(status: dict[str, Any]) -> str | None:
    """Why a run that says `running` is not: the process that owns it (the Ray driver, or
    rank 0 without Ray) ran on this host and no longer exists (SIGKILL, OOM, a lost
    terminal). None when it is alive or runs elsewhere (another host cannot be checked)."""
    import socket

    owner = status.get("owner")
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (
            f"its driver (pid {pid}) ended without recording an end (killed?); run the same "
            "command again to resume from its last complete checkpoint"
        )
    except PermissionError:  # alive, another user's
        return None
    return None


def print_outputs(spec: JobSpec, code: int) -> None:
    """Where the run's outputs are, and the held-out accuracy when there is one."""
    run_dir = run_dir_of(spec)
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
        ev: dict[str, Any] = json.loads((run_dir / "eval.json").read_text())
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
