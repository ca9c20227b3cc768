"""Kubernetes options of a job spec (`k8s:` section). The `vlaunch k8s` flags and the chart's
values are derived from these fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from launcher.specbase import Section


class PersistentVolume(Section):
    existing_claim: str | None = None
    """Use this existing PersistentVolumeClaim instead of creating one."""
    size: str = "100Gi"
    """Size of the claim the chart creates."""
    storage_class: str | None = None
    """StorageClass of the claim the chart creates (cluster default when unset)."""
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    """Access mode; several nodes writing checkpoints need ReadWriteMany."""
    mount_path: str = "/workspace"
    """Where the volume is mounted in every pod (checkpoints, model cache)."""


class SecretRef(Section):
    name: str
    """Name of the Kubernetes Secret."""
    key: str
    """Key inside the Secret."""


class KubernetesOptions(Section):
    namespace: str = "default"
    """Namespace of every object of the run."""
    image: str = "ghcr.io/vlaunch/vlaunch:0.1.0-cuda"
    """Container image with vlaunch and the training stack (see docker/)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    kuberay: bool = False
    """Render a KubeRay RayJob instead of the operator-free Indexed Job."""
    service_account: str | None = None
    """Service account of the pods."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of the pods."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the pods."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the pods."""
    priority_class: str | None = None
    """PriorityClass name of the pods."""
    shm_size: str = "16Gi"
    """Size of the in-memory /dev/shm volume (data-loader workers need it)."""
    cpu: str | None = None
    """CPU request per pod (default: from the hardware profile)."""
    memory: str | None = None
    """Memory request per pod (default: from the hardware profile)."""
    volume: PersistentVolume = Field(default_factory=PersistentVolume)
    """Volume for checkpoints and the model cache."""
    hf_token: SecretRef | None = None
    """Secret holding the Hugging Face token (exposed as HF_TOKEN)."""
    wandb_api_key: SecretRef | None = None
    """Secret holding the W&B API key (exposed as WANDB_API_KEY)."""
    backoff_limit: int = Field(default=3, ge=0)
    """How often Kubernetes retries failed pods before the run is failed."""
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=0)
    """Delete finished objects after this many seconds (None keeps them)."""
