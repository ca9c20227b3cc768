"""Kubernetes options of a job spec (`k8s:` section).

The `vlaunch k8s` flags are generated from these fields and the chart's values are derived
from them (`launcher/k8s/values.py`: snake_case here, camelCase in `values.yaml`), so each
option is defined once, here.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlaunch_core.section import Section

#: A Kubernetes resource quantity (`16Gi`, `500m`, `2`).
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
#: An RFC 1123 DNS label (namespaces).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: An RFC 1123 DNS subdomain (Secret, claim, service-account and priority-class names).
DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
#: A key inside a Secret.
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


def _check(pattern: re.Pattern[str], value: str | None, what: str) -> str | None:
    if value is not None and not pattern.match(value):
        raise ValueError(f"not {what}")
    return value


def _quantity(value: Any) -> Any:
    """Numbers (YAML reads `cpu: 8` as an int) become strings; strings must be quantities."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{value:g}"
    if isinstance(value, str):
        _check(QUANTITY, value, "a Kubernetes quantity such as 16Gi, 8 or 500m")
    return value


class PersistentVolume(Section):
    enabled: bool = True
    """Mount a PersistentVolumeClaim for checkpoints and the model cache (off: an emptyDir,
    lost with the pod, so `output.dir` should then be an object-store URI)."""
    existing_claim: str | None = None
    """Use this existing PersistentVolumeClaim instead of creating one."""
    size: str = "100Gi"
    """Size of the claim the chart creates."""
    storage_class: str | None = None
    """StorageClass of the claim the chart creates (cluster default when unset)."""
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    """Access mode; several nodes writing checkpoints need ReadWriteMany."""
    mount_path: str = "/workspace"
    """Where the volume is mounted in every pod (checkpoints, model cache). A relative
    `output.dir` is placed under it inside the pods."""

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return _quantity(v)

    @field_validator("existing_claim", "storage_class")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _check(DNS_SUBDOMAIN, v, "a Kubernetes object name (lowercase, digits, '-', '.')")

    @field_validator("mount_path")
    @classmethod
    def _mount(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "" or "/../" in v + "/":
            raise ValueError("must be an absolute path other than / (e.g. /workspace)")
        return v.rstrip("/")


class SecretRef(Section):
    """A key of a Kubernetes Secret; also written `SECRET:KEY` (e.g. `hf-token:token`)."""

    name: str
    """Name of the Kubernetes Secret."""
    key: str
    """Key inside the Secret."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            name, sep, key = data.partition(":")
            if not sep:
                raise ValueError(f"write a secret reference as SECRET:KEY (got {data!r})")
            return {"name": name, "key": key}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check(DNS_SUBDOMAIN, v, "a Secret name (lowercase, digits, '-', '.')") or v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _check(SECRET_KEY, v, "a Secret key (letters, digits, '-', '_', '.')") or v


class KubeRayOptions(Section):
    enabled: bool = False
    """Render a KubeRay `RayJob` (needs the KubeRay operator) instead of the operator-free
    Indexed Job."""
    ray_version: str = "2.60.0"
    """Ray version in the image (the RayJob's `rayVersion`)."""


class KubernetesOptions(Section):
    namespace: str = "default"
    """Namespace of every object of the run."""
    image: str | None = None
    """Container image with vlaunch and the training stack, e.g.
    `registry.example.com/ml/vlaunch:0.1.0-cuda`. Required by `vlaunch k8s`: none is
    published, build and push it (docs/containers.md)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    kuberay: KubeRayOptions = Field(default_factory=KubeRayOptions)
    """KubeRay mode (`k8s.kuberay: true` is short for `k8s.kuberay.enabled: true`)."""
    service_account: str | None = None
    """Service account of the pods."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of the pods, e.g. `{nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}`."""
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    """Tolerations of the pods. The default tolerates the `nvidia.com/gpu:NoSchedule` taint
    that GPU nodes usually carry (harmless elsewhere); `[]` for none."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the pods."""
    priority_class: str | None = None
    """PriorityClass name of the pods."""
    shm_size: str = "16Gi"
    """Size of the in-memory /dev/shm volume (data-loader workers need it)."""
    cpu: str | None = None
    """CPU request per pod (default: `cpu_per_gpu` x the pod's GPUs, at most 90% of the
    hardware profile's cores; on the `cpu` profile, one core per worker process)."""
    memory: str | None = None
    """Memory request and limit per pod (default: `memory_per_gpu_gib` x the pod's GPUs, at
    least the plan's host-memory prediction + 10%, at most 90% of the profile's host memory;
    on the `cpu` profile, 4Gi per worker process)."""
    cpu_per_gpu: int = Field(default=10, ge=1)
    """CPU cores a pod requests per GPU when `cpu` is not set (8 GPUs: 80 cores, which
    common 8-GPU nodes offer: 96 to 256 hardware threads)."""
    memory_per_gpu_gib: int = Field(default=100, ge=1)
    """Memory in GiB a pod requests per GPU when `memory` is not set (8 GPUs: 800Gi, below
    the 1 TiB of common 8-GPU nodes)."""
    volume: PersistentVolume = Field(default_factory=PersistentVolume)
    """Volume for checkpoints and the model cache."""
    hf_token: SecretRef | None = None
    """Secret holding the Hugging Face token (exposed as HF_TOKEN), as SECRET:KEY."""
    wandb_api_key: SecretRef | None = None
    """Secret holding the W&B API key (exposed as WANDB_API_KEY), as SECRET:KEY."""
    backoff_limit: int = Field(default=3, ge=0)
    """How often Kubernetes retries failed pods before the run is failed (exit code 75,
    interrupted but resumable, and node disruptions are not counted)."""
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=0)
    """Delete finished objects after this many seconds (None keeps them)."""
    termination_grace_seconds: int = Field(default=300, ge=0)
    """Seconds a pod gets between SIGTERM and SIGKILL (the trainer checkpoints on SIGTERM)."""
    head_wait_seconds: int = Field(default=600, ge=1)
    """How long worker pods wait for the Ray head to come up before they fail."""
    run_as_user: int = Field(default=1000, ge=1)
    """Non-root user id of the containers (the image's `vlaunch` user is 1000)."""
    fs_group: int = Field(default=1000, ge=0)
    """Group id that owns the mounted volume."""

    @model_validator(mode="before")
    @classmethod
    def _kuberay_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kuberay"), bool):
            return {**data, "kuberay": {"enabled": data["kuberay"]}}
        return data

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return _check(DNS_LABEL, v, "a namespace name (lowercase RFC 1123 label)") or v

    @field_validator("service_account", "priority_class")
    @classmethod
    def _object_names(cls, v: str | None) -> str | None:
        return _check(DNS_SUBDOMAIN, v, "a Kubernetes object name (lowercase, digits, '-', '.')")

    @field_validator("shm_size", "cpu", "memory", mode="before")
    @classmethod
    def _quantities(cls, v: Any) -> Any:
        return _quantity(v)
