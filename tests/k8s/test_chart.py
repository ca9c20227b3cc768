"""The finetune-job chart, rendered through the real Helm engine (helm-python-sdk: Helm v4's Go
SDK, no binary), linted with `helm lint --strict`, every object validated with
kubernetes-validate --strict (Kubernetes 1.29 and 1.33) and the RayJob against KubeRay's CRD."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import jsonschema
import pytest

from launcher.k8s.chart import Rendered, parse, render
from tests.k8s.helpers import CHART, VALUE_SETS, rayjob_validator, validate_object, values
from vlaunch_core.errors import UserError

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
)


def pod_templates(rendered: Rendered) -> list[dict[str, Any]]:
    """Every pod template of the run (Job, RayJob head/worker groups and submitter)."""
    out = []
    for obj in rendered.objects:
        if obj["kind"] == "Job":
            out.append(obj["spec"]["template"])
        if obj["kind"] == "RayJob":
            spec = obj["spec"]
            cluster = spec["rayClusterSpec"]
            out.append(cluster["headGroupSpec"]["template"])
            out += [g["template"] for g in cluster.get("workerGroupSpecs", [])]
            out.append(spec["submitterPodTemplate"])
    return out


def training_templates(rendered: Rendered) -> list[dict[str, Any]]:
    """Pod templates that train (not the KubeRay submitter)."""
    return [
        t
        for t in pod_templates(rendered)
        if t["metadata"]["labels"]["app.kubernetes.io/component"] != "submitter"
    ]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_renders_valid_objects(name: str) -> None:
    rendered = render(values(name), "ml")
    assert rendered.objects
    for obj in rendered.objects:
        validate_object(obj)
        meta = obj["metadata"]
        assert meta["namespace"] == "ml"
        assert len(meta["name"]) <= 63 and DNS_1035.match(meta["name"]), meta["name"]
        for label in STANDARD_LABELS:
            assert meta["labels"].get(label), (obj["kind"], label)
    assert rendered.run_name == VALUE_SETS[name]["runName"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_passes(name: str) -> None:
    report = helm_python.lint(str(CHART), values(name), strict=True, namespace="ml")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_without_the_required_values_fails_naming_them() -> None:
    report = helm_python.lint(str(CHART), None, strict=True)
    errors = " ".join(report["errors"])
    assert "/job/spec" in errors and "/image" in errors, report


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"nodes": -1}, "at '/nodes': minimum: got -1, want 1"),
        ({"nodes": 0}, "at '/nodes': minimum: got 0, want 1"),
        ({"gpusPerNode": "8"}, "at '/gpusPerNode': got string, want integer"),
        ({"nodez": 4}, "additional properties 'nodez' not allowed"),
        ({"volume": {"sise": "1Ti"}}, "at '/volume': additional properties 'sise' not allowed"),
        ({"shmSize": "lots"}, "at '/shmSize'"),
        ({"hfToken": {"name": "hf"}}, "at '/hfToken'"),
        ({"outputDir": "relative/runs"}, "at '/outputDir'"),
    ],
)
def test_schema_rejects_bad_values_clearly(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(UserError) as caught:
        render(values("cpu-1node", **changes), "ml")
    message = caught.value.message
    assert message.startswith("the finetune-job chart rejects these values: ")
    assert expected in message
    # The same through the engine directly: it is the chart's schema that refuses.
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values("cpu-1node", **changes))


def test_values_yaml_and_schema_agree() -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        defaults, schema = chart.values, chart.schema
    assert schema is not None
    assert set(defaults) == set(schema["properties"])
    for key in ("volume", "kuberay"):
        assert set(defaults[key]) == set(schema["properties"][key]["properties"])


@pytest.mark.parametrize(
    "raw",
    [
        "A" * 200,
        "9" * 200,
        "Ünïcode_RUN!! " * 15,
        "../../etc/passwd" * 12 + "-",
        "---",
        "x" * 39 + "-" * 100 + "y",
    ],
    ids=["upper", "digits", "unicode", "path", "dashes", "dash-run"],
)
def test_hostile_run_names_become_bounded_dns_labels(raw: str) -> None:
    rendered = render(values("kuberay-4x8", runName=raw), "ml")
    name = rendered.run_name
    assert len(name) <= 40 and DNS_1035.match(name), name  # RayJob <= 47, pods add "-<index>"
    for obj in rendered.objects + render(values("cpu-1node", runName=raw), "ml").objects:
        validate_object(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    other = render(values("kuberay-4x8", runName=raw + "2"), "ml").run_name
    assert other != name or len(raw) < 40  # truncated names keep a hash of the full name


def test_short_names_are_kept_readable() -> None:
    assert render(values("cpu-1node", runName="my-run-2"), "ml").run_name == "my-run-2"
    assert render(values("cpu-1node", runName="a" * 40), "ml").run_name == "a" * 40
    changed = render(values("cpu-1node", runName="My Run_2"), "ml").run_name
    assert changed.startswith("my-run-2-") and len(changed) == len("my-run-2-") + 6


@pytest.mark.parametrize(
    "names", [("Demo", "demo", "DEMO_", "demo_", "de mo"), ("名前", "名字", "run")]
)
def test_distinct_run_names_get_distinct_objects(names: tuple[str, ...]) -> None:
    """Normalisation alone made these one name: the second launch was refused as existing
    and the runs shared a volume."""
    rendered = [render(values("cpu-1node", runName=n), "ml").run_name for n in names]
    assert len(set(rendered)) == len(names), rendered
    assert all(len(n) <= 40 and DNS_1035.match(n) for n in rendered)


def test_indexed_job_runs_head_and_workers() -> None:
    rendered = render(values("gpu-4x8"), "ml")
    kinds = [m.kind for m in rendered.manifests]
    assert kinds == ["Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Job"]
    job = rendered.workload.obj
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    rules = {r["action"]: r for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r}
    assert rules["FailJob"]["onExitCodes"]["values"] == [2]
    service = next(o for o in rendered.objects if o["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["VLAUNCH_HEAD_HOST"] == "gpu-run-0.gpu-run"  # <job>-<index>.<service>
    config = next(o for o in rendered.objects if o["kind"] == "ConfigMap")
    script = config["data"]["entrypoint.sh"]
    assert "ray start --head" in script and "vlaunch run /etc/vlaunch/job.yaml" in script
    assert config["data"]["job.yaml"].strip() == VALUE_SETS["gpu-4x8"]["job"]["spec"].strip()


def test_kuberay_mode_renders_a_rayjob() -> None:
    rendered = render(values("kuberay-4x8"), "ml")
    assert [m.kind for m in rendered.manifests] == ["ConfigMap", "PersistentVolumeClaim", "RayJob"]
    spec = rendered.workload.obj["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypoint"].startswith("vlaunch run /etc/vlaunch/job.yaml")
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    small = render(values("kuberay-1node"), "ml").workload.obj["spec"]["rayClusterSpec"]
    assert "workerGroupSpecs" not in small


def test_rayjob_schema_check_is_strict() -> None:
    """The CRD validation used above does catch a misplaced key."""
    obj = render(values("kuberay-4x8"), "ml").workload.obj
    obj["spec"]["rayClusterSpec"]["headGroupSpec"]["replicas"] = 1
    with pytest.raises(jsonschema.ValidationError, match="replicas"):
        rayjob_validator().validate(obj)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pods_are_non_root_and_get_resources(name: str) -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        v = chart.merge_values(values(name))  # with the chart's defaults, as Helm renders
    rendered = render(values(name), "ml")
    for template in pod_templates(rendered):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 1
    for template in training_templates(rendered):
        pod = template["spec"]
        (c,) = pod["containers"]
        gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
        assert gpus == v["gpusPerNode"]
        requests = c.get("resources", {}).get("requests", {})
        per_gpu = (str(v["cpuPerGpu"] * gpus), f"{v['memoryPerGpuGib'] * gpus}Gi") if gpus else ()
        expected = (
            (v["cpu"] or per_gpu[0], v["memory"] or per_gpu[1]) if gpus else (v["cpu"], v["memory"])
        )
        assert (requests.get("cpu", ""), requests.get("memory", "")) == expected
        volumes = {vol["name"]: vol for vol in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "16Gi"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["dshm"] == "/dev/shm"
        assert mounts["data"] == v.get("volume", {}).get("mountPath", "/workspace")
        if v.get("volume", {}).get("enabled", True):
            claim = v.get("volume", {}).get("existingClaim") or f"{v['runName']}-data"
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
        else:
            assert volumes["data"]["emptyDir"] == {}
        for key, field in (
            ("nodeSelector", "nodeSelector"),
            ("tolerations", "tolerations"),
            ("affinity", "affinity"),
            ("priorityClass", "priorityClassName"),
            ("serviceAccount", "serviceAccountName"),
        ):
            assert pod.get(field) == (v.get(key) or None), key


def test_claim_is_created_kept_or_reused() -> None:
    created = render(values("pvc-and-secrets"), "ml")
    (pvc,) = [o for o in created.objects if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["storageClassName"] == "fast-rwx"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"
    for name in ("existing-claim", "kuberay-1node"):
        assert "PersistentVolumeClaim" not in [m.kind for m in render(values(name), "ml").manifests]


def test_secrets_are_references_never_values() -> None:
    rendered = render(values("pvc-and-secrets"), "ml")
    (c,) = rendered.workload.obj["spec"]["template"]["spec"]["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in c["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        "HF_TOKEN": {"name": "hf-token", "key": "token"},
        "WANDB_API_KEY": {"name": "wandb", "key": "api-key"},
        "RAY_AUTH_TOKEN": {"name": "secret-run-ray-auth", "key": "auth_token"},
    }
    assert "ttlSecondsAfterFinished" not in rendered.workload.obj["spec"]  # null keeps the Job


def test_notes_say_how_to_follow_the_run() -> None:
    notes = render(values("gpu-4x8"), "ml").notes
    assert "vlaunch logs --follow k8s:ml/gpu-run" in notes
    assert "vlaunch status k8s:ml/gpu-run" in notes
    assert "kubectl -n ml logs -f -l app.kubernetes.io/instance=gpu-run" in notes
    assert "kubectl -n ml get rayjob ray-run" in render(values("kuberay-4x8"), "ml").notes


def test_parse_orders_objects_for_creation() -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values("gpu-4x8"), name="x", namespace="ml")
    assert list(out) != [m.source for m in parse(out).manifests]  # the engine's order differs
    assert [m.kind for m in parse(out).manifests][-1] == "Job"
