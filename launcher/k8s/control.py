"""`vlaunch status|logs|cancel` for Kubernetes runs, whose handles read `k8s:<namespace>/<name>`.

A run is the chart's workload (an Indexed Job, or a KubeRay RayJob) plus every object that
carries its labels. The state comes from the API objects (Job conditions, RayJob status,
pods), never from printed text. The driver's log is the log of pod 0 of the Indexed Job, or
of the KubeRay submitter pod (`ray job submit` streams the driver there); following it goes
on to the replacement pod when the driver pod is replaced (exit 75, node drain). Cancel
deletes the workload (its pods, or the Ray cluster, go with it) and every object labelled
with the run, except the data claim: it holds the checkpoints a resubmission resumes from.

The `kubernetes` ApiClient is injected (`KubernetesControl(api_client)`); the module-level
functions build one from the kubeconfig when none is given.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from launcher.k8s.kubeapi import Kube, KubeError, default_api_client
from launcher.k8s.submit import find_workload, handle, selector
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from launcher.jobs import JobStatus

logger = logging.getLogger(__name__)

BACKEND = "k8s"
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
#: Pod phases in which a container has started, so there is a log to read.
STARTED = ("Running", "Succeeded", "Failed")
#: Kinds `cancel` deletes by label (the data claim is kept on purpose).
RUN_KINDS = ("RayJob", "Job", "Service", "ConfigMap", "Secret", "Pod")


@dataclass(frozen=True)
class RunRef:
    namespace: str
    name: str

    @property
    def job_id(self) -> str:
        return handle(self.namespace, self.name)


def parse_job_id(job_id: str) -> RunRef:
    """`k8s:<namespace>/<name>` -> RunRef."""
    body = job_id.removeprefix(f"{BACKEND}:")
    namespace, sep, name = body.partition("/")
    if not job_id.startswith(f"{BACKEND}:") or not sep or not namespace or not name:
        raise UserError(
            f"'{job_id}' is not a Kubernetes run handle",
            hint="write k8s:<namespace>/<name>, as `vlaunch k8s` printed it",
        )
    return RunRef(namespace, name)


def _status(ref: RunRef, state: str, detail: dict[str, Any]) -> JobStatus:
    from launcher.jobs import JobStatus

    return JobStatus(backend=BACKEND, job_id=ref.job_id, state=state, detail=detail)


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def pod_summary(pod: dict[str, Any]) -> str:
    """Phase, and why a pod waits or failed (`Pending: ImagePullBackOff`, `Failed: exit 2`)."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    reasons = []
    for c in status.get("containerStatuses") or []:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reasons.append(str(state["waiting"]["reason"]))
        if "terminated" in state:
            reasons.append(f"exit {state['terminated'].get('exitCode')}")
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            reasons.append(str(c.get("reason") or "Unschedulable"))
    return f"{phase}: {', '.join(reasons)}" if reasons else phase


def _pod_index(pod: dict[str, Any]) -> int:
    labels = pod["metadata"].get("labels") or {}
    return int(labels.get("batch.kubernetes.io/job-completion-index", -1))


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


class KubernetesControl:
    """Status, logs and cancel of runs, on an injected `kubernetes` ApiClient."""

    def __init__(self, api_client: Any, *, watch_timeout: int = 60):
        self.kube = Kube(api_client)
        self.watch_timeout = watch_timeout

    # ------------------------------------------------------------------ lookup

    def workload(self, ref: RunRef) -> tuple[str, dict[str, Any]] | None:
        """("RayJob" | "Job", object) of the run, or None when there is none."""
        return find_workload(self.kube, ref.namespace, ref.name)

    def _require(self, ref: RunRef) -> tuple[str, dict[str, Any]]:
        found = self.workload(ref)
        if found is None:
            raise UserError(
                f"no run named '{ref.name}' in namespace '{ref.namespace}'",
                hint="check the handle `vlaunch k8s` printed; finished runs are deleted after "
                "k8s.ttl_seconds_after_finished",
            )
        return found

    # ------------------------------------------------------------------ status

    def status(self, job_id: str) -> JobStatus:
        ref = parse_job_id(job_id)
        kind, obj = self._require(ref)
        pods = self.kube.list("Pod", ref.namespace, selector(ref.name)).get("items") or []
        detail: dict[str, Any] = {
            "kind": kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "pods": {p["metadata"]["name"]: pod_summary(p) for p in pods},
        }
        state = (
            self._rayjob_state(obj, detail)
            if kind == "RayJob"
            else self._job_state(obj, pods, detail)
        )
        return _status(ref, state, detail)

    @staticmethod
    def _job_state(job: dict[str, Any], pods: list[dict[str, Any]], detail: dict[str, Any]) -> str:
        spec, status = job.get("spec") or {}, job.get("status") or {}
        detail.update(
            nodes=spec.get("completions"),
            active=status.get("active", 0),
            succeeded=status.get("succeeded", 0),
            failed=status.get("failed", 0),
        )
        conditions = _true_conditions(job)
        for kind in ("Complete", "Failed", "FailureTarget", "Suspended"):
            if kind in conditions:
                detail["reason"] = conditions[kind].get("reason")
                detail["message"] = conditions[kind].get("message")
                break
        if "Complete" in conditions:
            return SUCCEEDED
        if "Failed" in conditions or "FailureTarget" in conditions:
            return FAILED
        driver = _newest([p for p in pods if _pod_index(p) == 0])
        if driver is not None and (driver.get("status") or {}).get("phase") == "Running":
            return RUNNING
        return PENDING

    @staticmethod
    def _rayjob_state(rayjob: dict[str, Any], detail: dict[str, Any]) -> str:
        status = rayjob.get("status") or {}
        deployment = status.get("jobDeploymentStatus") or ""
        job_status = status.get("jobStatus") or ""
        detail.update(
            job_deployment_status=deployment,
            job_status=job_status,
            ray_cluster=status.get("rayClusterName"),
            reason=status.get("reason"),
            message=status.get("message"),
        )
        if deployment == "Complete":
            return {"SUCCEEDED": SUCCEEDED, "STOPPED": CANCELLED}.get(job_status, FAILED)
        if deployment in ("Failed", "ValidationFailed"):
            return FAILED
        if deployment in ("Running", "Retrying") or job_status == "RUNNING":
            return RUNNING
        return PENDING

    # ------------------------------------------------------------------ logs

    def logs(self, job_id: str, *, follow: bool = False, out: IO[str] | None = None) -> int:
        """Write the driver's log to `out`; with `follow`, until the run ends. Returns the exit
        status for the CLI: 0, or 1 when there is no driver log to show."""
        out = out or sys.stdout
        ref = parse_job_id(job_id)
        kind, _ = self._require(ref)
        if kind == "RayJob":
            extra, container = "app.kubernetes.io/component=submitter", "ray-job-submitter"
        else:
            extra, container = "batch.kubernetes.io/job-completion-index=0", "trainer"
        seen: set[str] = set()
        while True:
            pod = self._next_driver(ref, extra, seen, wait=follow)
            if pod is None:
                if not seen:
                    print(
                        f"{ref.job_id}: no driver log: the driver pod has not started",
                        file=sys.stderr,
                    )
                    return 1
                return 0
            meta = pod["metadata"]
            for chunk in self.kube.pod_log(meta["name"], ref.namespace, container, follow=follow):
                out.write(chunk.decode("utf-8", errors="replace"))
                out.flush()
            seen.add(meta["uid"])
            if not follow:
                return 0

    def _terminal(self, ref: RunRef) -> bool:
        found = self.workload(ref)
        if found is None:
            return True
        kind, obj = found
        detail: dict[str, Any] = {}
        if kind == "RayJob":
            return self._rayjob_state(obj, detail) in TERMINAL
        return self._job_state(obj, [], detail) in TERMINAL

    def _next_driver(
        self, ref: RunRef, extra: str, seen: set[str], *, wait: bool
    ) -> dict[str, Any] | None:
        """The newest driver pod not in `seen` whose container started. None when there is
        nothing (more) to show: a shown driver pod succeeded, the run is over, or (without
        `wait`) no driver has started. With `wait`, watch the pods until one of these."""

        def phase(pod: dict[str, Any]) -> str:
            return str((pod.get("status") or {}).get("phase") or "")

        def finished(pod: dict[str, Any]) -> bool:
            return pod["metadata"]["uid"] in seen and phase(pod) == "Succeeded"

        def usable(pod: dict[str, Any]) -> bool:
            return pod["metadata"]["uid"] not in seen and phase(pod) in STARTED

        sel = selector(ref.name) + f",{extra}"
        while True:
            listed = self.kube.list("Pod", ref.namespace, sel)
            items = listed.get("items") or []
            if any(finished(p) for p in items):
                return None
            candidates = [p for p in items if usable(p)]
            if candidates:
                return _newest(candidates)
            if not wait or self._terminal(ref):
                return None
            version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
            for kind, pod in self.kube.watch_pods(ref.namespace, sel, version, self.watch_timeout):
                if kind == "DELETED":
                    continue
                if finished(pod):
                    return None
                if usable(pod):
                    return pod
                if pod["metadata"]["uid"] in seen and phase(pod) == "Failed":
                    break  # the run may have failed with it: check again

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: str) -> JobStatus:
        """Delete everything of the run but its data claim."""
        ref = parse_job_id(job_id)
        found = self.workload(ref)
        sel = selector(ref.name)
        leftovers = self.kube.list("ConfigMap", ref.namespace, sel).get("items") or []
        if found is None and not leftovers:
            self._require(ref)
        if found is not None:
            self.kube.delete(found[0], ref.name, ref.namespace)
        for kind in RUN_KINDS:
            try:
                self.kube.delete_collection(kind, ref.namespace, sel)
            except KubeError as e:
                if not (kind == "RayJob" and e.status == 404):  # no KubeRay in this cluster
                    raise
        claims = self.kube.list("PersistentVolumeClaim", ref.namespace, sel).get("items") or []
        detail = {
            "deleted": f"{found[0]} {ref.name} and every {', '.join(RUN_KINDS)} labelled {sel}"
            if found
            else f"leftovers labelled {sel}",
            "kept_claims": [c["metadata"]["name"] for c in claims],
        }
        return _status(ref, CANCELLED, detail)


def status(job_id: str, *, api_client: Any = None) -> JobStatus:
    """The state of the run `k8s:<namespace>/<name>`."""
    return KubernetesControl(api_client or default_api_client()).status(job_id)


def logs(
    job_id: str, *, follow: bool = False, out: IO[str] | None = None, api_client: Any = None
) -> int:
    """Write the run's driver log to `out` (stdout); follow it until the run ends."""
    control = KubernetesControl(api_client or default_api_client())
    return control.logs(job_id, follow=follow, out=out)


def cancel(job_id: str, *, api_client: Any = None) -> JobStatus:
    """Delete the run's objects (the data claim is kept)."""
    return KubernetesControl(api_client or default_api_client()).cancel(job_id)
