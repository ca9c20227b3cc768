"""Launched jobs, whatever the backend: one set of states, one status type.

Every backend reports `JobStatus`: the state as one `JobState` for every backend, with the
backend's own word beside it (`COMPLETED` on Slurm, a Job condition or pod phase on
Kubernetes, the run's `status.json` state locally). Handles and the backend registry are in
launcher/backends.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vlaunch_core.errors import UserError


class JobState(enum.StrEnum):
    """The state of a launched job, the same words for every backend (torchx's `AppState`)."""

    PENDING = "PENDING"
    """Accepted, not running yet: queued, scheduling, pulling images, requeued."""
    RUNNING = "RUNNING"
    """The trainer driver runs (or the job is starting or ending on its nodes)."""
    SUCCEEDED = "SUCCEEDED"
    """The run finished."""
    FAILED = "FAILED"
    """The run failed: an error, a time limit, a lost node, out of memory."""
    CANCELLED = "CANCELLED"
    """Stopped on request (`vlaunch cancel`, scancel, Ctrl-C)."""
    PREEMPTED = "PREEMPTED"
    """Stopped by the scheduler to make room, and not coming back by itself."""
    UNKNOWN = "UNKNOWN"
    """A state word this vlaunch does not know (`backend_state` says which)."""

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (it will not change state by itself any more)."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED)


@dataclass(frozen=True)
class JobStatus:
    """The state of a launched job: what `describe` and `cancel` return on every backend."""

    backend: str
    """`local`, `slurm` or `k8s`."""
    job_id: str
    """The full handle (`slurm:123`, `k8s:ns/name`, `local:/path/runs/name`)."""
    state: JobState
    backend_state: str
    """The backend's own word for it (`COMPLETED`, `Complete`, `Running`, `stopped`, ...)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Backend-specific facts (nodes, reason, exit code, log path, pods, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "job_id": self.job_id,
            "state": self.state.value,
            "backend_state": self.backend_state,
            "detail": dict(self.detail),
        }

    def headline(self) -> str:
        """`slurm:12  SUCCEEDED (COMPLETED)`."""
        return f"{self.job_id}  {self.state.value} ({self.backend_state})"


class NoLogYet(UserError):
    """The job has no log to show yet (not started, or its log is not reachable from here)."""

    exit_code = 1
