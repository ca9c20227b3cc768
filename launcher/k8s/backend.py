"""The Kubernetes backend: the `finetune-job` chart rendered for the spec and its plan
(`KubernetesRequest`), created with the `kubernetes` client; status, logs and cancel of runs.

The ApiClient is injected (`KubernetesBackend(api_client=...)`, as torchx's
`KubernetesScheduler(client=...)`); without one it is built from the kubeconfig the first time
the cluster is needed, so a dry-run never imports the `kubernetes` client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launcher.pipeline import Backend, Scheduled
from vlaunch_core.errors import Problem, raise_if_any

if TYPE_CHECKING:
    from launcher.jobs import JobStatus
    from launcher.k8s.chart import Rendered
    from launcher.k8s.control import KubernetesControl
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubernetesRequest:
    """The rendered chart of one run, and the values it was rendered with."""

    namespace: str
    values: dict[str, Any]
    rendered: Rendered

    def materialize(self) -> str:
        """The manifests as `helm template` prints them (Secret data redacted)."""
        return self.rendered.text

    def describe(self) -> str:
        return "\n".join(
            f"create {m.kind} {self.namespace}/{m.name}" for m in self.rendered.manifests
        )

    def values_yaml(self) -> str:
        """The chart values, for `helm install -f` (`--print-values`)."""
        from launcher.k8s.values import values_yaml

        return values_yaml(self.values)


class KubernetesBackend(Backend[KubernetesRequest]):
    """Runs on a Kubernetes cluster: an Indexed Job, or a KubeRay RayJob."""

    name = "k8s"

    def __init__(self, *, api_client: Any = None, context: str | None = None) -> None:
        self._api_client = api_client
        self.context = context

    @property
    def api_client(self) -> Any:
        if self._api_client is None:
            from launcher.k8s.kubeapi import default_api_client

            self._api_client = default_api_client(self.context)
        return self._api_client

    def control(self) -> KubernetesControl:
        from launcher.k8s.control import KubernetesControl

        return KubernetesControl(self.api_client)

    def check(self, spec: JobSpec) -> None:
        problems = []
        if spec.resources.profile == "auto":
            problems.append(
                Problem(
                    "resources.profile",
                    "'auto' would describe this machine, not the cluster",
                    "name the cluster nodes' hardware profile: --profile h100-80gb (see "
                    "`vlaunch profiles`), or --profile cpu",
                )
            )
        if spec.k8s.image is None:
            problems.append(
                Problem(
                    "k8s.image",
                    "no container image: the pods need one with vlaunch and the training stack, "
                    "and none is published",
                    "build and push it (docs/containers.md: `docker build -f docker/Dockerfile "
                    "-t REGISTRY/vlaunch:0.1.0-cuda .`), then --image REGISTRY/vlaunch:0.1.0-cuda "
                    "or k8s.image in the job spec",
                )
            )
        raise_if_any("cannot run this job on Kubernetes", problems)

    def submit_dryrun(self, spec: JobSpec, plan: Plan) -> KubernetesRequest:
        from launcher.k8s.chart import render
        from launcher.k8s.values import chart_values, paths_outside_volume

        opts = spec.k8s
        if opts.kuberay.enabled and "ttl_seconds_after_finished" in opts.model_fields_set:
            logger.warning(
                "k8s.ttl_seconds_after_finished is not used with KubeRay: the Ray "
                "cluster is deleted as soon as the job finishes"
            )
        outside = paths_outside_volume(spec)
        if outside:
            logger.warning(
                "these inputs are not on the pods' volume (%s), so they must exist in the "
                "image at the same path: %s",
                opts.volume.mount_path,
                ", ".join(outside),
            )
        values = chart_values(spec, plan)
        return KubernetesRequest(opts.namespace, values, render(values, opts.namespace))

    def schedule(self, request: KubernetesRequest) -> Scheduled:
        from launcher.k8s.kubeapi import Kube
        from launcher.k8s.submit import submit

        handle = submit(Kube(self.api_client), request.rendered, request.namespace)
        return Scheduled(handle, notes=request.rendered.notes)

    def describe(self, handle: str) -> JobStatus:
        return self.control().status(handle)

    def cancel(self, handle: str) -> JobStatus:
        return self.control().cancel(handle)

    def log_iter(self, handle: str, *, follow: bool = False) -> Iterator[str]:
        return self.control().log_iter(handle, follow=follow)
