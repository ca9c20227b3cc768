"""The chart used with Helm alone: `helm install` with only the required values, the values
parsed by the Helm engine's own `--set-file`/`--set` parsers, rendered as an install, linted
`--strict`, every object validated (kubernetes-validate --strict, 1.29 and 1.33); and the
chart's README, whose values table is generated from values.schema.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import helm_python
import pytest

from launcher.k8s.chart import parse
from launcher.k8s.chart_docs import render as render_readme
from tests.k8s.helpers import CHART, IMAGE, SPECS, validate_object
from vlaunch_core.k8s_options import KubernetesOptions
from vlaunch_core.plan import make_plan
from vlaunch_core.spec_load import load_spec

#: A common 8-GPU A100 80GB node: AWS p4de.24xlarge (96 vCPUs, 1152 GiB); DGX A100 (128
#: cores, 1 TiB in its 320 GB version), GCP a2-ultragpu-8g (96 vCPUs, 1360 GB) offer more.
COMMON_8_GPU_NODE = {"cpu": 96, "memory_gib": 1024}


def helm_values(*args: str) -> dict[str, Any]:
    """Values as the helm CLI builds them from `--set-file K=PATH` and `--set K=V`."""
    values: dict[str, Any] = {}
    for arg in args:
        kind, _, expression = arg.partition(" ")
        parsed = (
            helm_python.parse_set_file(expression)
            if kind == "--set-file"
            else helm_python.parse_set_string(expression)
        )
        _merge(values, parsed)
    return values


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def install(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="my-run", namespace="ml", is_install=True)
    return parse(out).objects


def test_installs_with_only_the_required_values(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text((SPECS / "tiny.yaml").read_text())
    values = helm_values(f"--set-file job.spec={job}", f"--set image={IMAGE}")
    assert set(values) == {"job", "image"}
    objects = install(values)
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Job",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
    ]
    for obj in objects:
        validate_object(obj)
    report = helm_python.lint(str(CHART), values, strict=True, namespace="ml")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    (job_obj,) = [o for o in objects if o["kind"] == "Job"]
    assert job_obj["metadata"]["name"] == "my-run"  # no runName: the release name
    pod = job_obj["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    # Sized for the one GPU asked for by default, not for the node.
    assert container["resources"] == {
        "requests": {"cpu": "10", "memory": "100Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "100Gi", "nvidia.com/gpu": 1},
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config["data"]["job.yaml"].strip() == job.read_text().strip()
    assert "plan.json" not in config["data"]  # vlaunch run plans in the pod, for this Job


@pytest.mark.parametrize(("missing", "path"), [("image", "/image"), ("job.spec", "/job/spec")])
def test_a_missing_required_value_is_named(tmp_path: Path, missing: str, path: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: x\n")
    given = {"job.spec": f"--set-file job.spec={job}", "image": f"--set image={IMAGE}"}
    del given[missing]
    with pytest.raises(helm_python.HelmValuesError, match=f"at '{path}'"):
        install(helm_values(*given.values()))


def test_requests_follow_the_gpus_tolerations_and_selectors_are_settable(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: x\n")
    values = helm_values(
        f"--set-file job.spec={job}",
        f"--set image={IMAGE}",
        "--set gpusPerNode=8",
        "--set nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-A100-SXM4-80GB",
        "--set tolerations[0].key=dedicated,tolerations[0].value=ml,"
        "tolerations[0].effect=NoSchedule,tolerations[0].operator=Equal",
    )
    (job_obj,) = [o for o in install(values) if o["kind"] == "Job"]
    pod = job_obj["spec"]["template"]["spec"]
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "80", "memory": "800Gi", "nvidia.com/gpu": 8}
    assert int(requests["cpu"]) <= COMMON_8_GPU_NODE["cpu"]
    assert int(requests["memory"].removesuffix("Gi")) <= COMMON_8_GPU_NODE["memory_gib"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "value": "ml", "effect": "NoSchedule", "operator": "Equal"}
    ]


def test_vlaunch_sizes_8_a100_80gb_pods_for_a_common_node() -> None:
    """`vlaunch k8s` on 8 GPUs of the a100-80gb profile: the same per-GPU rule as the chart,
    at most what a common 8-GPU node offers (docs/kubernetes.md states these numbers)."""
    from launcher.k8s.values import pod_requests

    spec = load_spec(
        SPECS / "tiny.yaml",
        ["resources.profile=a100-80gb", "resources.gpus_per_node=8", "resources.nodes=2"],
    )
    cpu, memory = pod_requests(spec, make_plan(spec))
    assert (cpu, memory) == ("80", "800Gi")
    defaults = KubernetesOptions()
    with helm_python.Chart.load(str(CHART)) as chart:
        chart_defaults = chart.values
    assert (chart_defaults["cpuPerGpu"], chart_defaults["memoryPerGpuGib"]) == (
        defaults.cpu_per_gpu,
        defaults.memory_per_gpu_gib,
    )


def test_golden_chart_readme_is_current() -> None:
    path = CHART / "README.md"
    if os.environ.get("VLAUNCH_REGEN_GOLDEN"):
        path.write_text(render_readme())
    assert path.read_text() == render_readme(), (
        "charts/finetune-job/README.md is stale: run `make golden` "
        "(or python -m launcher.k8s.chart_docs)"
    )


def test_readme_lists_every_value() -> None:
    text = render_readme()
    with helm_python.Chart.load(str(CHART)) as chart:
        keys = list(chart.values)
    for key in keys:
        assert f"| `{key}` |" in text, key
    assert "| `job.spec` | string | **required** |" in text
    assert "| `image` | string | **required** |" in text
