"""Shared pieces of the Kubernetes tests: chart value sets, validators, the CLI runner."""

from __future__ import annotations

import copy
import gzip
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

CHART = REPO / "charts" / "finetune-job"
SPECS = Path(__file__).parent / "specs"
GOLDEN = Path(__file__).parent / "golden"
CRD = Path(__file__).parent / "schemas" / "ray.io_rayjobs.yaml.gz"  # see schemas/README.md
KUBE_VERSIONS = ("1.29.0", "1.33.0")

JOB = "name: chart-test\nmodel:\n  name_or_path: tiny:llava\ndata:\n  mixture: shapes\n"
#: An image for the value sets (the chart requires one; none is published).
IMAGE = "registry.example.com/ml/vlaunch:0.1.0-cuda"

#: Value sets the chart is rendered with (chart level: no vlaunch in between).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "cpu-1node": {
        "runName": "cpu-run",
        "job": {"spec": JOB},
        "nodes": 1,
        "gpusPerNode": 0,
        "image": "registry.example.com/ml/vlaunch:0.1.0-cpu",
        "cpu": "2",
        "memory": "8Gi",
    },
    "gpu-4x8": {
        "runName": "gpu-run",
        "job": {"spec": JOB},
        "image": IMAGE,
        "nodes": 4,
        "gpusPerNode": 8,
        "cpu": "100",
        "memory": "1800Gi",
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "topology.kubernetes.io/zone",
                                    "operator": "In",
                                    "values": ["a"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "priorityClass": "training",
        "serviceAccount": "trainer",
    },
    "pvc-and-secrets": {
        "runName": "secret-run",
        "job": {"spec": JOB},
        "image": IMAGE,
        "nodes": 2,
        "gpusPerNode": 8,
        "volume": {"storageClass": "fast-rwx", "size": "2Ti", "mountPath": "/data"},
        "outputDir": "/data/runs",
        "hfToken": {"name": "hf-token", "key": "token"},
        "wandbApiKey": {"name": "wandb", "key": "api-key"},
        "ttlSecondsAfterFinished": None,
    },
    "existing-claim": {
        "runName": "claim-run",
        "job": {"spec": JOB},
        "image": IMAGE,
        "nodes": 2,
        "gpusPerNode": 4,
        "volume": {"existingClaim": "team-checkpoints"},
    },
    "kuberay-4x8": {
        "runName": "ray-run",
        "job": {"spec": JOB},
        "image": IMAGE,
        "nodes": 4,
        "gpusPerNode": 8,
        "kuberay": {"enabled": True},
        "hfToken": {"name": "hf-token", "key": "token"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "kuberay-1node": {
        "runName": "ray-small",
        "job": {"spec": JOB},
        "image": IMAGE,
        "nodes": 1,
        "gpusPerNode": 0,
        "kuberay": {"enabled": True},
        "volume": {"enabled": False},
        "outputDir": "s3://bucket/runs",
    },
}


def values(name: str, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(VALUE_SETS[name])
    out.update(changes)
    return out


@cache
def rayjob_validator() -> Any:
    import jsonschema

    schema = rayjob_schema()
    return jsonschema.validators.validator_for(schema)(schema)


@cache
def rayjob_schema() -> dict[str, Any]:
    """The CRD's v1 openAPIV3Schema, made strict: objects with `properties` reject unknown keys
    (what the API server's strict field validation does; the CRD relies on pruning)."""
    with gzip.open(CRD, "rt", encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    return schema


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_object(obj: dict[str, Any]) -> None:
    """Kubernetes objects: kubernetes-validate --strict for every KUBE_VERSIONS; RayJob: CRD."""
    import kubernetes_validate

    if obj["kind"] == "RayJob":
        rayjob_validator().validate(obj)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`vlaunch ARGV` in this process: (exit code, stdout, stderr)."""
    from launcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
    sys.stdout.flush()
    return code, out.getvalue(), err.getvalue()
