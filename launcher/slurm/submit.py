"""Submit a `SlurmRequest`: check the cluster, write the files, `sbatch --parsable`.

Every Slurm command goes through a `Runner` (argv -> CompletedProcess), injected so that the
tests drive the real commands against the real local cluster. Output is parsed only in its
machine-readable forms; anything unexpected raises an error that shows the raw output
(submitit's `FailedSubmissionError`).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence

from launcher.slurm.render import SlurmRequest
from launcher.slurm.resources import SINFO_FORMAT, NodeLimits, parse_sinfo
from vlaunch_core.errors import UserError, did_you_mean

logger = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

_JOB_ID = re.compile(r"^(\d+)(?:;\S+)?$")


def run_command(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command, capturing its output (the default `Runner`)."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise missing_tool(argv[0]) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"`{shlex.join(argv)}` did not answer in {timeout:.0f} s",
            hint="is slurmctld reachable from here? (`scontrol ping`)",
        ) from None


def missing_tool(tool: str) -> UserError:
    return UserError(
        f"`{tool}` is not on PATH: this machine has no Slurm client",
        hint="run on a Slurm login node (or install the Slurm client and set SLURM_CONF); "
        "`vlaunch slurm --dry-run` prints the script without Slurm",
    )


class SlurmCommandError(UserError):
    """A Slurm command failed or printed something that could not be parsed."""

    def __init__(self, what: str, proc: subprocess.CompletedProcess[str], hint: str | None = None):
        argv = proc.args if isinstance(proc.args, list | tuple) else [str(proc.args)]
        raw = (
            f"\n  command: {shlex.join(str(a) for a in argv)}\n  exit status: {proc.returncode}"
            f"\n  stdout: {proc.stdout.strip()!r}\n  stderr: {proc.stderr.strip()!r}"
        )
        super().__init__(what + raw, hint=hint)
        self.proc = proc


def checked(
    runner: Runner, argv: Sequence[str], what: str, hint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; a non-zero exit becomes a `SlurmCommandError` with the raw output."""
    proc = runner(argv)
    if proc.returncode != 0:
        raise SlurmCommandError(what, proc, hint)
    return proc


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise missing_tool(tool)


def partitions(runner: Runner = run_command) -> list[str]:
    """The cluster's partitions, hidden ones included (`sinfo -h -a -o %P`; the default one
    is marked `*` there)."""
    proc = checked(runner, ["sinfo", "-h", "-a", "-o", "%P"], "cannot list the Slurm partitions")
    names = [line.strip().rstrip("*") for line in proc.stdout.splitlines() if line.strip()]
    if not names:
        raise SlurmCommandError("sinfo listed no partitions", proc)
    return names


def check_partition(partition: str | None, runner: Runner = run_command) -> None:
    """A partition the cluster does not have fails here, listing those it has."""
    if partition is None:
        return
    known = partitions(runner)
    wanted = [p for p in partition.split(",") if p]  # sbatch takes a list
    for name in wanted:
        if name not in known:
            raise UserError(
                f"Slurm has no partition '{name}'.{did_you_mean(name, known)}",
                hint=f"partitions here: {', '.join(known)} (slurm.partition / --partition)",
            )


def partition_limits(partition: str | None, runner: Runner) -> NodeLimits | None:
    """Ask the cluster for the smallest node of the partition; None (logged) when it cannot
    be asked or says nothing about it (`vlaunch slurm` then checks the partition itself)."""
    argv = ["sinfo", "-h", "-N", "-o", SINFO_FORMAT]
    try:
        proc = runner(argv)
    except UserError as e:  # no sinfo, or no answer
        logger.info("cannot ask Slurm for the nodes' size (%s): sizes from the profile", e.message)
        return None
    if proc.returncode != 0:
        logger.info("`sinfo` failed: sizes from the profile (%s)", proc.stderr.strip())
        return None
    try:
        return parse_sinfo(proc.stdout, partition)
    except ValueError:
        raise SlurmCommandError("could not read the node sizes sinfo printed", proc) from None


def parse_job_id(proc: subprocess.CompletedProcess[str]) -> str:
    """The job id `sbatch --parsable` printed (`<id>` or `<id>;<cluster>`)."""
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    match = _JOB_ID.match(lines[-1]) if lines else None
    if match is None:
        raise SlurmCommandError("could not read the job id sbatch printed", proc)
    return match.group(1)


def write_files(request: SlurmRequest) -> None:
    request.log_dir.mkdir(parents=True, exist_ok=True)
    for path, text in request.files.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        if path == request.script_path:
            tmp.chmod(0o755)
        os.replace(tmp, path)


def submit(request: SlurmRequest, runner: Runner = run_command) -> str:
    """Check, write the script and the resolved spec, submit; return the Slurm job id.

    Nothing is written or submitted when a check fails (no sbatch, unknown partition).
    """
    require_tools("sbatch")
    check_partition(request.partition, runner)
    write_files(request)
    proc = checked(runner, request.sbatch_argv, "sbatch refused the job")
    job_id = parse_job_id(proc)
    logger.info("submitted %s as Slurm job %s", request.script_path, job_id)
    return job_id
