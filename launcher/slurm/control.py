"""`vlaunch status|logs|cancel` for Slurm jobs (`slurm:<jobid>` or a bare job id).

The state comes from `squeue -h -o` (fields split on a control character, so names with
spaces or `|` parse), the restart count, exit code and log path from the one-line
`scontrol show job -o`. A job Slurm has forgotten (MinJobAge) is looked up with `sacct` when
the cluster keeps accounting. Parse failures show the raw output. Slurm's state words are
mapped to `JobState` by `SLURM_STATES` and kept beside it.
"""

from __future__ import annotations

import codecs
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher.jobs import JobState, JobStatus, NoLogYet
from launcher.slurm.submit import Runner, SlurmCommandError, checked, run_command
from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

BACKEND = "slurm"
SEP = "\x1f"  # ASCII unit separator: cannot appear in a job name from an #SBATCH line
#: Slurm's job states (squeue `%T`, sacct `State`) as vlaunch's.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,  # nodes allocated, booting
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SUSPENDED": JobState.PENDING,  # paused with its allocation; it resumes
    "STOPPED": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # the script ended, its processes are being cleaned up
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.PREEMPTED,
}
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


def job_state(word: str) -> JobState:
    """vlaunch's state for a Slurm state word (`CANCELLED by 0` is CANCELLED)."""
    return SLURM_STATES.get(word.split(maxsplit=1)[0] if word.strip() else "", JobState.UNKNOWN)


def _job_status(handle: str, word: str, detail: dict[str, Any]) -> JobStatus:
    return JobStatus(
        backend=BACKEND, job_id=handle, state=job_state(word), backend_state=word, detail=detail
    )


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


def log_iter(
    job_id: str,
    *,
    follow: bool = False,
    runner: Runner = run_command,
    poll_seconds: float = 1.0,
) -> Iterator[str]:
    """The job's log as it is written; with `follow`, until the job ends.

    A requeued job appends to the same file (`--open-mode=append`), so following it spans
    its restarts.
    """
    jid = parse_job_id(job_id)
    if _squeue(jid, runner) is None:
        raise _forgotten(jid)
    path = _log_file(jid, runner)
    offset = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        ended = _ended(jid, runner)  # before reading: nothing written after it is missed
        if path.is_file():
            text, offset = _read_from(path, offset, decoder)
            if text:
                yield text
        elif not follow or ended:
            raise NoLogYet(
                f"job {jid} has no log yet at {path}",
                hint="it has not started, or that folder is not shared with this machine; "
                "`vlaunch logs --follow` waits for it",
            )
        if not follow or ended:
            return
        time.sleep(poll_seconds)  # polling a file another machine writes


def _ended(jid: str, runner: Runner) -> bool:
    row = _squeue(jid, runner)
    return row is None or job_state(row["state"]).is_terminal


def _read_from(path: Path, offset: int, decoder: codecs.IncrementalDecoder) -> tuple[str, int]:
    """The text of `path` from byte `offset`, and the new offset (from 0 if it shrank)."""
    if path.stat().st_size < offset:
        offset = 0
        decoder.reset()
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    return decoder.decode(data), offset + len(data)


def cancel(job_id: str, *, runner: Runner = run_command) -> JobStatus:
    """`scancel` the job (its steps get SIGTERM, then SIGKILL after KillWait); its status
    right after (a running job passes through COMPLETING before CANCELLED)."""
    jid = parse_job_id(job_id)
    if _squeue(jid, runner) is None:
        raise _forgotten(jid)
    checked(runner, ["scancel", jid], f"scancel failed for job {jid}")
    return status(job_id, runner=runner)
