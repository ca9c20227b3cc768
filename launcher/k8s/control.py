"""`vlaunch status|logs|cancel` for Kubernetes runs, whose handles read `k8s:<namespace>/<name>`.

A run is the chart's workload (an Indexed Job, or a KubeRay RayJob) plus every object that
carries its labels. The state comes from the API objects (Job conditions, RayJob status,
pods), never from printed text. The driver's log is the log of pod 0 of the Indexed Job, or
of the KubeRay submitter pod (`ray job submit` streams the driver there); following it goes
on to the replacement pod when the driver pod is replaced (exit 75, node drain). Cancel
deletes the workload (its pods, or the Ray cluster, go with it) and every object labelled
with the run, except the data claim: it holds the checkpoints a resubmission resumes from.

States: the Job's condition (`Complete`, `Failed`, ...) or, before it has one, the driver
pod's phase; the RayJob's `jobDeploymentStatus/jobStatus`; mapped to `JobState` by
`job_state` and `rayjob_state` and kept beside it.

The `kubernetes` ApiClient is injected (`KubernetesControl(api_client)`);
`launcher.k8s.backend.KubernetesBackend` builds one from the kubeconfig when none is given.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from launcher.jobs import JobState, JobStatus, NoLogYet
from launcher.k8s.kubeapi import Kube, KubeError
from launcher.k8s.submit import find_workload, handle, selector
from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

BACKEND = "k8s"
#: The Job conditions that decide a run's state, in the order they are looked at.
JOB_CONDITIONS: dict[str, JobState] = {
    "Complete": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "FailureTarget": JobState.FAILED,  # the Job controller is about to fail the Job
    "Suspended": JobState.PENDING,
}
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


def _status(ref: RunRef, state: tuple[JobState, str], detail: dict[str, Any]) -> JobStatus:
    return JobStatus(
        backend=BACKEND, job_id=ref.job_id, state=state[0], backend_state=state[1], detail=detail
    )


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


def job_state(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[JobState, str]:
    """The state of an Indexed Job run, and its word: the deciding condition, else the
    driver pod's phase (`NoDriverPod` before pod 0 exists)."""
    conditions = _true_conditions(job)
    for condition, state in JOB_CONDITIONS.items():
        if condition in conditions:
            return state, condition
    driver = _newest([p for p in pods if _pod_index(p) == 0])
    if driver is None:
        return JobState.PENDING, "NoDriverPod"
    phase = str((driver.get("status") or {}).get("phase") or "Unknown")
    return (JobState.RUNNING if phase == "Running" else JobState.PENDING), phase


def rayjob_state(rayjob: dict[str, Any]) -> tuple[JobState, str]:
    """The state of a KubeRay run, and its word (`jobDeploymentStatus/jobStatus`)."""
    status = rayjob.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    job_status = str(status.get("jobStatus") or "")
    word = "/".join(w for w in (deployment, job_status) if w) or "New"
    if deployment == "Complete":
        done = {"SUCCEEDED": JobState.SUCCEEDED, "STOPPED": JobState.CANCELLED}
        return done.get(job_status, JobState.FAILED), word
    if deployment in ("Failed", "ValidationFailed"):
        return JobState.FAILED, word
    if deployment in ("Running", "Retrying") or job_status == "RUNNING":
        return JobState.RUNNING, word
    return JobState.PENDING, word


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
    def _job_state(
        job: dict[str, Any], pods: list[dict[str, Any]], detail: dict[str, Any]
    ) -> tuple[JobState, str]:
        spec, status = job.get("spec") or {}, job.get("status") or {}
        detail.update(
            nodes=spec.get("completions"),
            active=status.get("active", 0),
            succeeded=status.get("succeeded", 0),
            failed=status.get("failed", 0),
        )
        conditions = _true_conditions(job)
        for kind in JOB_CONDITIONS:
            if kind in conditions:
                detail["reason"] = conditions[kind].get("reason")
                detail["message"] = conditions[kind].get("message")
                break
        return job_state(job, pods)

    @staticmethod
    def _rayjob_state(rayjob: dict[str, Any], detail: dict[str, Any]) -> tuple[JobState, str]:
        status = rayjob.get("status") or {}
        detail.update(
            job_deployment_status=status.get("jobDeploymentStatus") or "",
            job_status=status.get("jobStatus") or "",
            ray_cluster=status.get("rayClusterName"),
            reason=status.get("reason"),
            message=status.get("message"),
        )
        return rayjob_state(rayjob)

    # ------------------------------------------------------------------ logs

    def log_iter(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        """The driver's log as it comes; with `follow`, until the run ends (across
        replacement driver pods). `NoLogYet` when no driver pod has started."""
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
                    raise NoLogYet(
                        f"{ref.job_id}: no driver log: the driver pod has not started",
                        hint="`vlaunch logs --follow` waits for it",
                    )
                return
            meta = pod["metadata"]
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for chunk in self.kube.pod_log(meta["name"], ref.namespace, container, follow=follow):
                text = decoder.decode(chunk)
                if text:
                    yield text
            seen.add(meta["uid"])
            if not follow:
                return

    def _terminal(self, ref: RunRef) -> bool:
        found = self.workload(ref)
        if found is None:
            return True
        kind, obj = found
        state = rayjob_state(obj) if kind == "RayJob" else job_state(obj, [])
        return state[0].is_terminal

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
        return _status(ref, (JobState.CANCELLED, "Deleted"), detail)
