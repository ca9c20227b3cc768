"""`vlaunch status|logs|cancel` for Slurm jobs (`slurm:<jobid>` or a bare job id).

The state comes from `squeue -h -o` (fields split on a control character, so names with
spaces or `|` parse), the restart count, exit code and log path from the one-line
`scontrol show job -o`. A job Slurm has forgotten (MinJobAge) is looked up with `sacct` when
the cluster keeps accounting. Parse failures show the raw output.
"""

from __future__ import annotations

import codecs
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from launcher.slurm.submit import Runner, SlurmCommandError, checked, run_command
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from launcher.jobs import JobStatus

logger = logging.getLogger(__name__)

BACKEND = "slurm"
SEP = "\x1f"  # ASCII unit separator: cannot appear in a job name from an #SBATCH line
TERMINAL = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)
_SQUEUE_FIELDS = ("job_id", "state", "reason", "elapsed", "time_limit", "nodes", "nodelist", "name")
_SQUEUE_FORMAT = SEP.join(("%i", "%T", "%r", "%M", "%l", "%D", "%N", "%j"))
_SCONTROL_KEY = re.compile(r"(?:^| )([A-Za-z][A-Za-z0-9_/:]*)=")
_UNKNOWN_JOB = ("Invalid job id", "Unknown job", "does not exist")


def parse_job_id(job_id: str) -> str:
    """`slurm:123` or `123` -> `123`."""
    body = job_id.removeprefix(f"{BACKEND}:")
    if not body.isdigit():
        raise UserError(
            f"'{job_id}' is not a Slurm job handle",
            hint="write slurm:<jobid> (as `vlaunch slurm` printed it) or the bare job id",
        )
    return body


def scontrol_fields(line: str) -> dict[str, str]:
    """`Key=value Key=value ...` of `scontrol show ... -o` (values may contain spaces)."""
    keys = list(_SCONTROL_KEY.finditer(line))
    out: dict[str, str] = {}
    for i, match in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        out[match.group(1)] = line[match.end() : end].strip()
    return out


def _unknown(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and any(s in proc.stderr for s in _UNKNOWN_JOB)


def _forgotten(jid: str) -> UserError:
    return UserError(
        f"Slurm does not know job {jid} (any more)",
        hint="a finished job is forgotten after MinJobAge when the cluster keeps no "
        "accounting; its log is in the run's slurm/ folder",
    )


def _squeue(jid: str, runner: Runner) -> dict[str, str] | None:
    proc = runner(["squeue", "-h", "--states=all", "-j", jid, "-o", _SQUEUE_FORMAT])
    if _unknown(proc):
        return None
    if proc.returncode != 0:
        raise SlurmCommandError(f"squeue failed for job {jid}", proc)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        return None
    fields = lines[0].split(SEP, len(_SQUEUE_FIELDS) - 1)
    if len(fields) != len(_SQUEUE_FIELDS) or fields[0] != jid:
        raise SlurmCommandError(f"could not parse squeue's line for job {jid}", proc)
    return dict(zip(_SQUEUE_FIELDS, fields, strict=True))


def _scontrol(jid: str, runner: Runner) -> dict[str, str]:
    proc = runner(["scontrol", "show", "job", "-o", jid])
    if proc.returncode != 0:
        return {}  # forgotten between the two calls: squeue's answer stands
    fields = scontrol_fields(proc.stdout.strip())
    if fields.get("JobId") != jid:
        raise SlurmCommandError(f"could not parse scontrol's line for job {jid}", proc)
    return fields


def _sacct(jid: str, runner: Runner) -> dict[str, str] | None:
    """The job from accounting, or None when the cluster keeps none."""
    names = ("JobID", "JobName", "State", "ExitCode", "Elapsed", "NNodes", "NodeList")
    try:
        proc = runner(
            ["sacct", "-n", "-X", "-P", f"--delimiter={SEP}", "-j", jid, "-o", ",".join(names)]
        )
    except UserError:  # no sacct on PATH
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        return None
    fields = lines[-1].split(SEP)
    if len(fields) != len(names):
        raise SlurmCommandError(f"could not parse sacct's line for job {jid}", proc)
    return dict(zip(names, fields, strict=True))


def _job_status(handle: str, state: str, detail: dict[str, Any]) -> JobStatus:
    from launcher.jobs import JobStatus

    return JobStatus(backend=BACKEND, job_id=handle, state=state, detail=detail)


def status(job_id: str, *, runner: Runner = run_command) -> JobStatus:
    """The state of a Slurm job, with its restarts, exit code and log file."""
    jid = parse_job_id(job_id)
    handle = f"{BACKEND}:{jid}"
    row = _squeue(jid, runner)
    if row is None:
        acct = _sacct(jid, runner)
        if acct is None:
            raise _forgotten(jid)
        state = acct["State"].split()[0]  # "CANCELLED by 0" -> CANCELLED
        return _job_status(
            handle,
            state,
            {
                "name": acct["JobName"],
                "exit_code": acct["ExitCode"],
                "elapsed": acct["Elapsed"],
                "nodes": acct["NNodes"],
                "nodelist": acct["NodeList"],
                "source": "sacct",
            },
        )
    extra = _scontrol(jid, runner)
    detail: dict[str, Any] = {
        "name": row["name"],
        "reason": row["reason"],
        "elapsed": row["elapsed"],
        "time_limit": row["time_limit"],
        "nodes": row["nodes"],
        "nodelist": row["nodelist"],
    }
    if extra:
        detail.update(
            {
                "restarts": int(extra.get("Restarts", "0") or 0),
                "exit_code": extra.get("ExitCode", ""),
                "log": _stdout_path(extra),
            }
        )
    return _job_status(handle, row["state"], detail)


def _stdout_path(fields: dict[str, str]) -> str:
    """scontrol expands `%j`, `%x`, ... in StdOut but leaves `%%` doubled."""
    return fields.get("StdOut", "").replace("%%", "%")


def _log_file(jid: str, runner: Runner) -> Path:
    proc = checked(runner, ["scontrol", "show", "job", "-o", jid], f"Slurm has no job {jid}")
    path = _stdout_path(scontrol_fields(proc.stdout.strip()))
    if not path:
        raise SlurmCommandError(f"scontrol shows no StdOut for job {jid}", proc)
    return Path(path)


def logs(
    job_id: str,
    *,
    follow: bool = False,
    out: TextIO | None = None,
    runner: Runner = run_command,
    poll_seconds: float = 1.0,
) -> int:
    """Write the job's log to `out`; with `follow`, keep going until the job ends.

    A requeued job appends to the same file (`--open-mode=append`), so following it spans
    its restarts.
    """
    out = out or sys.stdout
    jid = parse_job_id(job_id)
    if _squeue(jid, runner) is None:
        raise _forgotten(jid)
    path = _log_file(jid, runner)
    offset = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        ended = _ended(jid, runner)  # before reading: nothing written after it is missed
        if path.is_file():
            offset = _copy_from(path, offset, out, decoder)
        elif not follow or ended:
            raise UserError(
                f"job {jid} has no log yet at {path}",
                hint="it has not started, or that folder is not shared with this machine; "
                "`vlaunch logs --follow` waits for it",
            )
        if not follow or ended:
            return 0
        time.sleep(poll_seconds)


def _ended(jid: str, runner: Runner) -> bool:
    row = _squeue(jid, runner)
    return row is None or row["state"] in TERMINAL


def _copy_from(path: Path, offset: int, out: TextIO, decoder: codecs.IncrementalDecoder) -> int:
    """Copy `path` from byte `offset` to `out`; the new offset (0 again if it shrank)."""
    if path.stat().st_size < offset:
        offset = 0
        decoder.reset()
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    text = decoder.decode(data)
    if text:
        out.write(text)
        out.flush()
    return offset + len(data)


def cancel(job_id: str, *, runner: Runner = run_command) -> None:
    """`scancel` the job (its steps get SIGTERM, then SIGKILL after KillWait)."""
    jid = parse_job_id(job_id)
    if _squeue(jid, runner) is None:
        raise _forgotten(jid)
    checked(runner, ["scancel", jid], f"scancel failed for job {jid}")
