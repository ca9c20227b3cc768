"""The few Kubernetes API calls vlaunch makes, through the official `kubernetes` client.

`Kube` wraps an injected `kubernetes.client.ApiClient` (tests pass one pointed at a loopback
server; the CLI builds one from the kubeconfig with `default_api_client`). Objects go in and
come out as plain dicts, exactly as the API server speaks them, so the chart's rendered
manifests are sent as they are. API and connection errors become `KubeError`, a user error
that names the call and the server's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

#: Seconds any single request may take (watches and log streams excepted).
REQUEST_TIMEOUT = 30
#: kind -> (API group attribute, method suffix) of the typed APIs.
KINDS: dict[str, tuple[str, str]] = {
    "Secret": ("core", "secret"),
    "ConfigMap": ("core", "config_map"),
    "PersistentVolumeClaim": ("core", "persistent_volume_claim"),
    "Service": ("core", "service"),
    "Pod": ("core", "pod"),
    "Job": ("batch", "job"),
}
#: `fieldValidation` of every create: unknown fields are errors, never silently dropped.
STRICT = "Strict"
#: kind -> (group, version, plural) of the custom resources.
CUSTOM: dict[str, tuple[str, str, str]] = {"RayJob": ("ray.io", "v1", "rayjobs")}


class KubeError(UserError):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


def default_api_client(context: str | None = None) -> Any:
    """An ApiClient from the in-cluster service account, or else the kubeconfig."""
    import os

    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            config.load_incluster_config()
            from kubernetes import client

            return client.ApiClient()
        # KUBECONFIG is read now (the client reads it once, at import).
        return config.new_client_from_config(
            config_file=os.environ.get("KUBECONFIG"), context=context
        )
    except ConfigException as e:
        raise UserError(
            f"no Kubernetes configuration: {e}",
            hint="point KUBECONFIG (or ~/.kube/config) at your cluster, e.g. "
            "`kubectl config current-context` should name it",
        ) from None


def _api_message(body: Any) -> str:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body or "").strip()[:500]
    return str(data.get("message") or data)


class Kube:
    """Typed-API calls by kind, with dict bodies and dict results."""

    def __init__(self, api_client: Any):
        from kubernetes import client

        self.api_client = api_client
        self._apis: dict[str, Any] = {
            "core": client.CoreV1Api(api_client),
            "batch": client.BatchV1Api(api_client),
        }
        self.custom = client.CustomObjectsApi(api_client)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API; JSON-decode the answer; turn failures into `KubeError`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except ApiException as e:
            raise KubeError(
                f"{what}: {e.status} {e.reason}: {_api_message(e.body)}", status=e.status or 0
            ) from None
        except HTTPError as e:
            raise KubeError(
                f"{what}: the Kubernetes API at {self.host} does not answer ({e})",
                hint="check the cluster is up and `kubectl cluster-info` works with the same "
                "kubeconfig",
            ) from None
        data = response.data
        return json.loads(data) if data else {}

    def _typed(self, kind: str, verb: str) -> Callable[..., Any]:
        group, suffix = KINDS[kind]
        return getattr(self._apis[group], f"{verb}_namespaced_{suffix}")

    def read_namespace(self, namespace: str) -> dict[str, Any]:
        return self._call(
            f"read namespace {namespace}", self._apis["core"].read_namespace, namespace
        )

    def create(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        """Create with strict field validation: the server refuses a field it does not know
        (400) instead of dropping it, e.g. a RayJob's `authOptions` on a KubeRay CRD too old
        to have it, which would otherwise start a Ray cluster without authentication."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        what = f"create {kind} {namespace}/{name}"
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return self._call(
                what,
                self.custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                obj,
                field_validation=STRICT,
            )
        return self._call(
            what, self._typed(kind, "create"), namespace, obj, field_validation=STRICT
        )

    def read(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        what = f"read {kind} {namespace}/{name}"
        try:
            if kind in CUSTOM:
                group, version, plural = CUSTOM[kind]
                return self._call(
                    what,
                    self.custom.get_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                )
            return self._call(what, self._typed(kind, "read"), name, namespace)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: str) -> dict[str, Any]:
        """The list object (`items`, `metadata.resourceVersion`)."""
        what = f"list {kind} in {namespace} ({selector})"
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return self._call(
                what,
                self.custom.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                label_selector=selector,
            )
        return self._call(what, self._typed(kind, "list"), namespace, label_selector=selector)

    def delete(self, kind: str, name: str, namespace: str) -> bool:
        """Delete one object and its dependents; False when it did not exist."""
        what = f"delete {kind} {namespace}/{name}"
        try:
            if kind in CUSTOM:
                group, version, plural = CUSTOM[kind]
                self._call(
                    what,
                    self.custom.delete_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    propagation_policy="Background",
                )
            else:
                self._call(
                    what,
                    self._typed(kind, "delete"),
                    name,
                    namespace,
                    propagation_policy="Background",
                )
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    def delete_collection(self, kind: str, namespace: str, selector: str) -> None:
        """Delete every object of `kind` that matches the label selector, with dependents."""
        what = f"delete {kind} in {namespace} ({selector})"
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            self._call(
                what,
                self.custom.delete_collection_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                label_selector=selector,
                propagation_policy="Background",
            )
            return
        self._call(
            what,
            self._typed(kind, "delete_collection"),
            namespace,
            label_selector=selector,
            propagation_policy="Background",
        )

    def watch_pods(
        self, namespace: str, selector: str, resource_version: str, timeout: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, pod) for pod changes after `resource_version`, for up to `timeout` s."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        stream = watch.Watch().stream(
            self._apis["core"].list_namespaced_pod,
            namespace,
            label_selector=selector,
            resource_version=resource_version,
            timeout_seconds=timeout,
            deserialize=False,
        )
        try:
            for event in stream:
                yield str(event["type"]), event["object"]
        except (ApiException, HTTPError) as e:
            raise KubeError(
                f"watch pods in {namespace} ({selector}): {e}", status=getattr(e, "status", 0) or 0
            ) from None

    def pod_log(
        self, name: str, namespace: str, container: str, *, follow: bool
    ) -> Iterator[bytes]:
        """The pod's log as it arrives (until the container ends when following)."""
        from kubernetes.client.exceptions import ApiException

        core = self._apis["core"]
        try:
            response = core.read_namespaced_pod_log(
                name,
                namespace,
                container=container,
                follow=follow,
                _preload_content=False,
                _request_timeout=None if follow else REQUEST_TIMEOUT,
            )
        except ApiException as e:
            raise KubeError(
                f"log of pod {namespace}/{name}: {e.status} {e.reason}: {_api_message(e.body)}",
                status=e.status or 0,
            ) from None
        try:
            yield from response.stream(4096, decode_content=True)
        finally:
            response.release_conn()
