"""The Kubernetes client path: submit, status, watch, logs (with follow) and cancel.

NOT A CLUSTER: no kind, minikube or Docker can run here. The real `kubernetes` Python client
talks HTTP to `FakeKubeAPI` (tests/k8s/fakeapi.py), a loopback server that stores objects and
speaks the API paths the client uses; nothing is scheduled, so each test plays the kubelet and
the Job/KubeRay controllers itself by writing pod phases, job conditions and log lines.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from launcher.jobs import NoLogYet
from launcher.k8s.chart import Rendered, render
from launcher.k8s.control import KubernetesControl, parse_job_id
from launcher.k8s.kubeapi import Kube, KubeError
from launcher.k8s.submit import submit
from launcher.k8s.values import chart_values
from tests.k8s.fakeapi import FakeKubeAPI
from tests.k8s.helpers import SPECS, run_cli
from vlaunch_core.errors import UserError
from vlaunch_core.plan import make_plan
from vlaunch_core.spec_load import load_spec

NAME = "tiny-llava-on-k8s-9df5b4"  # the chart: normalised, with a hash of the raw name
HANDLE = f"k8s:ml/{NAME}"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    server = FakeKubeAPI(namespaces=("ml",), kuberay=True).start()
    yield server
    server.stop()


def api_client(server: FakeKubeAPI) -> Any:
    config = client.Configuration()
    config.host = server.url
    return client.ApiClient(config)


def rendered(*overrides: str) -> Rendered:
    spec = load_spec(SPECS / "tiny.yaml", ["k8s.namespace=ml", *overrides])
    return render(chart_values(spec, make_plan(spec)), "ml")


def control(server: FakeKubeAPI) -> KubernetesControl:
    return KubernetesControl(api_client(server), watch_timeout=5)


def add_pod(server: FakeKubeAPI, name: str, phase: str, **labels: str) -> dict[str, Any]:
    """A pod as the Job controller would create it for the run (labels of its template)."""
    base = {"app.kubernetes.io/name": "finetune-job", "app.kubernetes.io/instance": NAME}
    return server.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ml", "labels": {**base, **labels}},
            "status": {"phase": phase},
        }
    )


def set_phase(server: FakeKubeAPI, name: str, phase: str) -> None:
    server.patch_status("Pod", "ml", name, phase=phase)


# ---------------------------------------------------------------------- submit


def test_submit_creates_the_rendered_objects_in_order(api: FakeKubeAPI) -> None:
    run = rendered("resources.nodes=2")
    assert submit(Kube(api_client(api)), run, "ml") == HANDLE
    posts = [path for method, path in api.requests if method == "POST"]
    assert posts == [
        "/api/v1/namespaces/ml/secrets",  # the Ray token, before the pods that read it
        "/api/v1/namespaces/ml/configmaps",
        "/api/v1/namespaces/ml/persistentvolumeclaims",
        "/api/v1/namespaces/ml/services",
        "/apis/batch/v1/namespaces/ml/jobs",
    ]
    for m in run.manifests:
        stored = api.get(m.kind, "ml", m.name)
        assert stored is not None
        assert stored["spec" if "spec" in m.obj else "data"] == m.obj.get("spec", m.obj.get("data"))


def test_submit_kuberay_creates_a_rayjob(api: FakeKubeAPI) -> None:
    submit(Kube(api_client(api)), rendered("k8s.kuberay=true"), "ml")
    assert api.get("RayJob", "ml", NAME) is not None
    assert api.get("Job", "ml", NAME) is None


def test_submit_refuses_a_missing_namespace_before_creating_anything(api: FakeKubeAPI) -> None:
    with pytest.raises(UserError, match="namespace 'research' does not exist"):
        submit(Kube(api_client(api)), rendered(), "research")
    assert [m for m, _ in api.requests if m != "GET"] == []


def test_submit_refuses_when_kuberay_is_not_installed() -> None:
    server = FakeKubeAPI(namespaces=("ml",), kuberay=False).start()
    try:
        with pytest.raises(UserError, match="KubeRay is not installed"):
            submit(Kube(api_client(server)), rendered("k8s.kuberay=true"), "ml")
        assert not server.objects
    finally:
        server.stop()


def test_submit_refuses_a_second_run_of_the_same_name(api: FakeKubeAPI) -> None:
    kube = Kube(api_client(api))
    submit(kube, rendered(), "ml")
    before = dict(api.objects)
    with pytest.raises(UserError, match=f"a run named '{NAME}' already exists") as caught:
        submit(kube, rendered(), "ml")
    assert caught.value.hint and f"vlaunch cancel {HANDLE}" in caught.value.hint
    assert api.objects.keys() == before.keys()


def test_submit_refuses_a_run_of_the_same_name_in_the_other_mode(api: FakeKubeAPI) -> None:
    kube = Kube(api_client(api))
    submit(kube, rendered("k8s.kuberay=true"), "ml")
    with pytest.raises(UserError, match="already exists"):
        submit(kube, rendered(), "ml")
    assert api.get("ConfigMap", "ml", NAME) is not None  # the running run's spec is untouched


def test_resubmitting_after_ttl_deletion_replaces_the_leftovers(api: FakeKubeAPI) -> None:
    """TTL deletion removes the finished Job and its pods; its ConfigMap, Service and Ray token
    Secret stay, and the next submission replaces them (a new cluster gets a new token)."""
    kube = Kube(api_client(api))
    submit(kube, rendered(), "ml")
    old_config = api.get("ConfigMap", "ml", NAME)
    old_secret = api.get("Secret", "ml", f"{NAME}-ray-auth")
    kube.delete("Job", NAME, "ml")  # what the TTL controller does
    assert submit(kube, rendered("train.max_steps=40"), "ml") == HANDLE
    new_config = api.get("ConfigMap", "ml", NAME)
    assert old_config is not None and new_config is not None
    assert new_config["metadata"]["uid"] != old_config["metadata"]["uid"]
    assert "max_steps: 40" in new_config["data"]["job.yaml"]
    new_secret = api.get("Secret", "ml", f"{NAME}-ray-auth")
    assert old_secret is not None and new_secret is not None
    assert new_secret["metadata"]["uid"] != old_secret["metadata"]["uid"]
    assert new_secret["data"]["auth_token"] != old_secret["data"]["auth_token"]


def test_resubmitting_after_cancel_reuses_the_claim(api: FakeKubeAPI) -> None:
    kube = Kube(api_client(api))
    submit(kube, rendered(), "ml")
    claim_uid = api.get("PersistentVolumeClaim", "ml", f"{NAME}-data")["metadata"]["uid"]  # type: ignore[index]
    control(api).cancel(HANDLE)
    assert submit(kube, rendered(), "ml") == HANDLE
    claim = api.get("PersistentVolumeClaim", "ml", f"{NAME}-data")
    assert claim is not None and claim["metadata"]["uid"] == claim_uid  # the same claim


def test_a_failed_create_rolls_back_what_was_created() -> None:
    server = FakeKubeAPI(namespaces=("ml",), reject=("jobs",)).start()
    try:
        with pytest.raises(KubeError, match=r"422 .*is invalid"):
            submit(Kube(api_client(server)), rendered(), "ml")
        assert server.objects == {}
    finally:
        server.stop()


def test_a_kuberay_without_auth_options_is_refused_not_run_open() -> None:
    """A KubeRay CRD older than 1.5.1 does not declare `authOptions`. The API server would
    silently drop it (a Ray cluster without token authentication) unless the create asks for
    strict field validation; the fake server behaves the same way, so this fails if vlaunch
    stops sending fieldValidation=Strict."""
    server = FakeKubeAPI(
        namespaces=("ml",), kuberay=True, undeclared=("spec.rayClusterSpec.authOptions",)
    ).start()
    try:
        with pytest.raises(KubeError) as caught:
            submit(Kube(api_client(server)), rendered("k8s.kuberay=true"), "ml")
        assert caught.value.status == 400
        assert 'unknown field "spec.rayClusterSpec.authOptions"' in caught.value.message
        assert caught.value.hint and "1.5.1" in caught.value.hint
        assert server.objects == {}  # the ConfigMap and claim created before it are undone
    finally:
        server.stop()


def test_unreachable_api_is_a_user_error() -> None:
    server = FakeKubeAPI().start()
    ac = api_client(server)
    server.stop()  # nothing listens on that port any more
    ac.configuration.retries = 0
    with pytest.raises(KubeError, match="does not answer"):
        submit(Kube(ac), rendered(), "ml")


# ---------------------------------------------------------------------- status


def test_status_follows_the_job_and_its_pods(api: FakeKubeAPI) -> None:
    submit(Kube(api_client(api)), rendered("resources.nodes=2"), "ml")
    ctl = control(api)
    first = ctl.status(HANDLE)
    assert (first.backend, first.job_id, first.state) == ("k8s", HANDLE, "PENDING")
    assert first.detail["nodes"] == 2
    add_pod(api, f"{NAME}-0-a", "Pending", **{"batch.kubernetes.io/job-completion-index": "0"})
    api.patch_status(
        "Pod",
        "ml",
        f"{NAME}-0-a",
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    pending = ctl.status(HANDLE)
    assert pending.state == "PENDING"
    assert pending.detail["pods"] == {f"{NAME}-0-a": "Pending: Unschedulable"}
    set_phase(api, f"{NAME}-0-a", "Running")
    assert ctl.status(HANDLE).state == "RUNNING"
    api.patch_status(
        "Job",
        "ml",
        NAME,
        conditions=[
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container trainer for pod ml/x failed with exit code 2",
            }
        ],
    )
    failed = ctl.status(HANDLE)
    assert failed.state == "FAILED" and failed.detail["reason"] == "PodFailurePolicy"


def test_status_of_a_rayjob(api: FakeKubeAPI) -> None:
    submit(Kube(api_client(api)), rendered("k8s.kuberay=true"), "ml")
    ctl = control(api)
    assert ctl.status(HANDLE).state == "PENDING"
    api.patch_status("RayJob", "ml", NAME, jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert ctl.status(HANDLE).state == "RUNNING"
    api.patch_status("RayJob", "ml", NAME, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    done = ctl.status(HANDLE)
    assert done.state == "SUCCEEDED" and done.detail["kind"] == "RayJob"


def test_status_of_an_unknown_run_is_a_user_error(api: FakeKubeAPI) -> None:
    with pytest.raises(UserError, match="no run named 'nope' in namespace 'ml'"):
        control(api).status("k8s:ml/nope")


@pytest.mark.parametrize("bad", ["k8s:ml", "k8s:/x", "slurm:12", "ml/x"])
def test_bad_handles(bad: str) -> None:
    with pytest.raises(UserError, match="not a Kubernetes run handle"):
        parse_job_id(bad)


# ---------------------------------------------------------------------- logs


def test_logs_of_the_driver_pod(api: FakeKubeAPI) -> None:
    submit(Kube(api_client(api)), rendered("resources.nodes=2"), "ml")
    ctl = control(api)
    add_pod(api, f"{NAME}-1-w", "Running", **{"batch.kubernetes.io/job-completion-index": "1"})
    api.append_log("ml", f"{NAME}-1-w", "worker noise\n")
    with pytest.raises(NoLogYet, match="the driver pod has not started") as caught:
        list(ctl.log_iter(HANDLE))
    assert caught.value.exit_code == 1
    add_pod(api, f"{NAME}-0-a", "Running", **{"batch.kubernetes.io/job-completion-index": "0"})
    api.append_log("ml", f"{NAME}-0-a", "step 1 loss 2.5\n")
    assert "".join(ctl.log_iter(HANDLE)) == "step 1 loss 2.5\n"


def test_follow_waits_streams_and_moves_to_the_replacement_pod(api: FakeKubeAPI) -> None:
    """The driver pod is pending, runs, is interrupted (exit 75), is replaced, and finishes:
    `logs --follow` prints both pods' logs in order and returns when the run is over."""
    submit(Kube(api_client(api)), rendered("resources.nodes=2"), "ml")
    index0 = {"batch.kubernetes.io/job-completion-index": "0"}
    add_pod(api, f"{NAME}-0-a", "Pending", **index0)
    out: list[str] = []
    result: list[int] = []

    def follow() -> None:
        out.extend(control(api).log_iter(HANDLE, follow=True))
        result.append(0)

    follower = threading.Thread(target=follow)
    follower.start()
    api.append_log("ml", f"{NAME}-0-a", "step 1\n")
    set_phase(api, f"{NAME}-0-a", "Running")
    api.append_log("ml", f"{NAME}-0-a", "interrupted: checkpoint saved, exit 75\n")
    assert api.log_opened("ml", f"{NAME}-0-a").wait(30)  # the follower reads pod a's log
    api.close_log("ml", f"{NAME}-0-a")
    set_phase(api, f"{NAME}-0-a", "Failed")
    add_pod(api, f"{NAME}-0-b", "Running", **index0)
    api.append_log("ml", f"{NAME}-0-b", "resumed at step 1\nstep 2\n")
    api.close_log("ml", f"{NAME}-0-b")
    set_phase(api, f"{NAME}-0-b", "Succeeded")
    api.patch_status("Job", "ml", NAME, conditions=[{"type": "Complete", "status": "True"}])
    follower.join(timeout=60)
    assert not follower.is_alive() and result == [0]
    assert "".join(out) == (
        "step 1\ninterrupted: checkpoint saved, exit 75\nresumed at step 1\nstep 2\n"
    )


def test_kuberay_logs_come_from_the_submitter(api: FakeKubeAPI) -> None:
    submit(Kube(api_client(api)), rendered("k8s.kuberay=true"), "ml")
    add_pod(api, f"{NAME}-head", "Running", **{"app.kubernetes.io/component": "ray-head"})
    add_pod(api, f"{NAME}-submit", "Succeeded", **{"app.kubernetes.io/component": "submitter"})
    api.append_log("ml", f"{NAME}-submit", "Job 'x' succeeded\n")
    api.close_log("ml", f"{NAME}-submit")
    assert "".join(control(api).log_iter(HANDLE, follow=True)) == "Job 'x' succeeded\n"


# ---------------------------------------------------------------------- cancel


@pytest.mark.parametrize("kuberay", [False, True])
def test_cancel_deletes_everything_but_the_claim(api: FakeKubeAPI, kuberay: bool) -> None:
    submit(Kube(api_client(api)), rendered(f"k8s.kuberay={str(kuberay).lower()}"), "ml")
    add_pod(api, f"{NAME}-0-a", "Running")
    api.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "someone-else", "namespace": "ml", "labels": {"app": "x"}},
        }
    )
    status = control(api).cancel(HANDLE)
    assert (status.state, status.backend_state) == ("CANCELLED", "Deleted")
    assert status.detail["kept_claims"] == [f"{NAME}-data"]
    left = sorted((plural, name) for plural, _, name in api.objects)
    assert left == [("configmaps", "someone-else"), ("persistentvolumeclaims", f"{NAME}-data")]
    with pytest.raises(UserError, match="no run named"):
        control(api).cancel(HANDLE)


# ---------------------------------------------------------------------- the CLI


def kubeconfig(tmp_path: Path, server: FakeKubeAPI) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
            }
        )
    )
    return path


def test_cli_submits_and_prints_the_handle(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, api)))
    code, out, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), "--namespace", "ml", "--nodes", "2"])
    assert code == 0, err
    assert out.strip().splitlines()[-1] == HANDLE
    assert f"vlaunch logs --follow {HANDLE}" in err  # the chart's NOTES
    job = api.get("Job", "ml", NAME)
    assert job is not None and job["spec"]["completions"] == 2


@pytest.mark.parametrize("kuberay", [False, True])
def test_the_configmap_hands_the_launch_plan_to_vlaunch_run(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kuberay: bool
) -> None:
    """The ConfigMap carries `vlaunch plan --json`'s plan for the same flags, mounted beside
    the job spec, and the driver is started with `--plan` on it."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, api)))
    flags = ["--nodes", "2", "train.global_batch_size=32"]
    mode = ["--kuberay"] if kuberay else []
    code, _, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), "--namespace", "ml", *mode, *flags])
    assert code == 0, err
    code, planned, err = run_cli(["plan", str(SPECS / "tiny.yaml"), "--json", *flags])
    assert code == 0, err
    config = api.get("ConfigMap", "ml", NAME)
    assert config is not None and config["data"]["plan.json"] == planned
    assert json.loads(planned)["world_size"] == 4
    if kuberay:
        rayjob = api.get("RayJob", "ml", NAME)
        assert rayjob is not None
        assert " --plan /etc/vlaunch/plan.json " in rayjob["spec"]["entrypoint"]
    else:
        job = api.get("Job", "ml", NAME)
        assert job is not None
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["VLAUNCH_PLAN"] == "/etc/vlaunch/plan.json"  # files/entrypoint.sh passes it


def test_cli_wants_the_clusters_hardware_profile() -> None:
    code, _, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), "--profile", "auto", "--dry-run"])
    assert code == 2 and "resources.profile: 'auto'" in err and "--profile" in err


def test_cli_wants_an_image() -> None:
    code, out, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), "k8s.image=", "--dry-run"])
    assert (code, out) == (2, "")
    assert "k8s.image: no container image" in err
    assert "docs/containers.md" in err and "--image" in err
