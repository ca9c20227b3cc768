"""The launch pipeline every backend goes through, and the interface a backend fills.

    validate -> plan -> fit gate -> render -> dry-run or submit

`Backend.dryrun(job, overrides)` validates the spec (`load_spec`, then the backend's own
`check`), plans it once (`make_plan`), refuses a plan that does not fit (the error
`vlaunch plan` gives, exit 1) and only then asks the backend to render its request
(`submit_dryrun(spec, plan)`); `Backend.submit` is that dry-run followed by `schedule`. Both
are owned by this base class, as torchx's `Scheduler.submit()` is `submit_dryrun()` +
`schedule()`, so no backend can skip validation, planning or the gate, and nothing is
written, started or submitted before the gate passed.

A backend fills only `submit_dryrun`, `schedule`, `describe`, `cancel` and `log_iter` (and
`check` when it has rules of its own). Every backend reports `JobStatus` (launcher/jobs.py).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from launcher.jobs import JobStatus
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


class Request(Protocol):
    """What a backend would submit, complete: `--dry-run` prints it, `schedule` submits it."""

    def materialize(self) -> str:
        """The request as text, exactly as it would be submitted (script, manifests, ...)."""
        ...

    def describe(self) -> str:
        """What submitting it would do, one action per line (files written, commands run)."""
        ...


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Launch(Generic[R]):
    """A validated, planned, gated and rendered launch: what `--dry-run` shows."""

    spec: JobSpec
    plan: Plan
    """Computed once for this launch; the request hands it to the workers."""
    request: R


@dataclass(frozen=True)
class Scheduled:
    """What `schedule` returns: the handle `status|logs|cancel` take."""

    handle: str
    notes: str = ""
    """What to tell the user beside the handle (where the log goes, kubectl commands)."""
    exit_code: int | None = None
    """Set when the backend ran the job in the foreground (local): the driver's exit status."""


class Backend(ABC, Generic[R]):
    """A place to run jobs (torchx's `Scheduler`): fill the abstract methods only."""

    name: ClassVar[str]

    # ------------------------------------------------------------------ the pipeline

    def dryrun(self, job: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Launch[R]:
        """Validate, plan, gate and render `job`: nothing is written, started or submitted."""
        from vlaunch_core.plan import make_plan
        from vlaunch_core.spec_load import load_spec

        spec = load_spec(job, list(overrides))
        self.check(spec)
        plan = make_plan(spec)
        plan.require_fit()
        logger.debug("%s: plan %s fits; rendering", self.name, plan.batch)
        return Launch(spec, plan, self.submit_dryrun(spec, plan))

    def submit(self, job: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Scheduled:
        """`dryrun` and then `schedule` its request."""
        return self.schedule(self.dryrun(job, overrides).request)

    # ------------------------------------------------------------------ what a backend fills

    def check(self, spec: JobSpec) -> None:
        """Raise a user error for what this backend cannot run (before planning)."""

    @abstractmethod
    def submit_dryrun(self, spec: JobSpec, plan: Plan) -> R:
        """Render the request that would run `spec` with `plan`; touch nothing."""

    @abstractmethod
    def schedule(self, request: R) -> Scheduled:
        """Submit (or, locally, run) a request `submit_dryrun` made."""

    @abstractmethod
    def describe(self, handle: str) -> JobStatus:
        """The job's state now."""

    @abstractmethod
    def cancel(self, handle: str) -> JobStatus:
        """Ask the backend to stop the job; its state right after."""

    @abstractmethod
    def log_iter(self, handle: str, *, follow: bool = False) -> Iterator[str]:
        """The driver's log as it comes; with `follow`, until the job ends. Raises
        `NoLogYet` when there is nothing to show."""
