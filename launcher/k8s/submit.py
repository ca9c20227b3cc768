"""Create a rendered run in the cluster: checks first, then the objects in install order.

Nothing is created unless the namespace exists, the KubeRay operator's RayJob resource is
there (KubeRay mode) and no run of the same name is active. If a create fails midway, what
this call created is deleted again. Objects are created with strict field validation, so a
KubeRay too old for the RayJob's `authOptions` refuses the run instead of starting its Ray
cluster without token authentication. The run's data claim is reused when it exists: it holds
the checkpoints that a run of the same name resumes from.
"""

from __future__ import annotations

import logging
from typing import Any

from launcher.k8s.chart import Rendered
from launcher.k8s.kubeapi import Kube, KubeError
from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

#: Kinds a finished run can leave behind (TTL deletion removes only the Job and its pods).
LEFTOVER_KINDS = ("ConfigMap", "Service", "Secret")
#: The oldest KubeRay whose RayJob has `rayClusterSpec.authOptions` (Ray token authentication).
KUBERAY_AUTH_VERSION = "1.5.1"


def handle(namespace: str, name: str) -> str:
    """The job id `vlaunch status|logs|cancel` take."""
    return f"k8s:{namespace}/{name}"


def selector(name: str) -> str:
    """The label selector of every object of the run `name` (set by the chart)."""
    return f"app.kubernetes.io/name=finetune-job,app.kubernetes.io/instance={name}"


def check_namespace(kube: Kube, namespace: str) -> None:
    try:
        kube.read_namespace(namespace)
    except KubeError as e:
        if e.status == 404:
            raise UserError(
                f"namespace '{namespace}' does not exist in the cluster at {kube.host}",
                hint=f"create it (`kubectl create namespace {namespace}`) or pick another "
                "with --namespace",
            ) from None
        if e.status != 403:
            raise
        logger.debug("not allowed to read namespace %s; assuming it exists", namespace)


def find_workload(kube: Kube, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """("RayJob" | "Job", object) of the run `name`, or None. A Job counts only with the chart's
    labels: KubeRay's submitter Job has the RayJob's name too."""
    try:
        rayjob = kube.read("RayJob", name, namespace)
    except KubeError as e:
        if e.status not in (403, 404):  # 404 also when KubeRay is not installed
            raise
        rayjob = None
    if rayjob is not None:
        return "RayJob", rayjob
    job = kube.read("Job", name, namespace)
    labels = (job or {}).get("metadata", {}).get("labels") or {}
    if job is not None and labels.get("app.kubernetes.io/name") == "finetune-job":
        return "Job", job
    return None


def check_can_start(kube: Kube, rendered: Rendered, namespace: str) -> None:
    """The workload kind is served and no run of this name exists (in either mode)."""
    workload = rendered.workload
    name = workload.name
    if workload.kind == "RayJob":
        try:
            kube.list("RayJob", namespace, selector(name))
        except KubeError as e:
            if e.status != 404:
                raise
            raise UserError(
                f"the cluster at {kube.host} has no RayJob resource (ray.io/v1): KubeRay is "
                "not installed",
                hint="install the KubeRay operator, or drop --kuberay to run the operator-free "
                "Indexed Job",
            ) from None
    if find_workload(kube, namespace, name) is not None:
        raise UserError(
            f"a run named '{name}' already exists in namespace '{namespace}'",
            hint=f"see `vlaunch status {handle(namespace, name)}`; `vlaunch cancel "
            f"{handle(namespace, name)}` removes it (its checkpoints on the claim are kept, so "
            "submitting again resumes), or give the run another name",
        )


def submit(kube: Kube, rendered: Rendered, namespace: str) -> str:
    """Create every object of `rendered` in `namespace`; return the run's handle."""
    name = rendered.run_name
    check_namespace(kube, namespace)
    check_can_start(kube, rendered, namespace)
    for kind in LEFTOVER_KINDS:
        kube.delete_collection(kind, namespace, selector(name))
    created: list[tuple[str, str]] = []
    try:
        for m in rendered.manifests:
            try:
                kube.create(m.obj, namespace)
            except KubeError as e:
                if e.status == 409 and m.kind == "PersistentVolumeClaim":
                    logger.info("reusing claim %s (checkpoints of earlier runs)", m.name)
                    continue
                if m.kind == "RayJob" and "authOptions" in e.message:
                    raise KubeError(
                        f"{e.message} (the KubeRay in the cluster at {kube.host} is older than "
                        f"{KUBERAY_AUTH_VERSION}: it cannot run Ray with token authentication)",
                        status=e.status,
                        hint=f"upgrade the KubeRay operator and its CRDs to "
                        f"{KUBERAY_AUTH_VERSION} or later, or drop --kuberay to run the "
                        "operator-free Indexed Job",
                    ) from None
                raise
            created.append((m.kind, m.name))
            logger.info("created %s %s/%s", m.kind, namespace, m.name)
    except KubeError:
        for kind, obj_name in reversed(created):
            try:
                kube.delete(kind, obj_name, namespace)
            except KubeError as undo:
                logger.warning("could not delete %s %s again: %s", kind, obj_name, undo)
        raise
    return handle(namespace, name)
