"""Submitted jobs, whatever the backend: a handle names the backend and the job.

Handles are what `vlaunch slurm` and `vlaunch k8s` print: `slurm:<jobid>` (a bare numeric id
means Slurm too) and `k8s:<namespace>/<name>`. Each backend has a control module with

    status(job_id: str) -> JobStatus
    logs(job_id: str, *, follow: bool, out: TextIO) -> int
    cancel(job_id: str) -> JobStatus | None

imported only when a handle names it (`vlaunch --help` stays light).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from vlaunch_core.errors import UserError

#: backend -> its control module, and what to install when it is missing.
CONTROL_MODULES: dict[str, str] = {
    "slurm": "launcher.slurm.control",
    "k8s": "launcher.k8s.control",
}
_MISSING = {
    "slurm": "Slurm support is not installed",
    "k8s": "Kubernetes support is not installed",
}


@dataclass(frozen=True)
class JobStatus:
    """The state of a submitted job, as its backend reports it."""

    backend: str
    """`slurm` or `k8s`."""
    job_id: str
    """The full handle (`slurm:123`, `k8s:ns/name`)."""
    state: str
    """The backend's own state word, upper case (`PENDING`, `RUNNING`, `COMPLETED`, ...)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Backend-specific facts (nodes, reason, exit code, log path, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "job_id": self.job_id,
            "state": self.state,
            "detail": dict(self.detail),
        }


def backend_of(handle: str) -> str:
    """The backend a job handle names."""
    prefix, sep, rest = handle.partition(":")
    if not sep:
        if handle.isdigit():
            return "slurm"
        raise UserError(
            f"'{handle}' is not a job handle",
            hint="use the handle `vlaunch slurm`/`vlaunch k8s` printed: slurm:<jobid> "
            "(or a bare Slurm job id) or k8s:<namespace>/<name>",
        )
    if prefix not in CONTROL_MODULES or not rest:
        raise UserError(
            f"'{handle}' is not a job handle",
            hint=f"the prefix is one of: {', '.join(f'{b}:' for b in CONTROL_MODULES)}",
        )
    return prefix


def control_module(handle: str) -> ModuleType:
    """The control module of the backend `handle` names."""
    backend = backend_of(handle)
    name = CONTROL_MODULES[backend]
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is missing too
        found = False
    if not found:
        raise UserError(
            f"{_MISSING[backend]}: cannot handle '{handle}'",
            hint="install a vlaunch version that includes it",
        )
    return importlib.import_module(name)
