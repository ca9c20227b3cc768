"""Ray token authentication of a Kubernetes run (RAY_AUTH_MODE=token): the chart rendered
through the real Helm engine, objects validated with kubernetes-validate --strict and the
KubeRay CRD, and `vlaunch k8s --dry-run` run in this process.

Operator-free mode: the chart makes a per-run Secret with a random token and every container
that runs Ray reads it through secretKeyRef. KubeRay mode: the RayJob asks the operator for
token authentication (`authOptions`), and the operator makes and injects the token.
"""

from __future__ import annotations

import base64
import string
from typing import Any

import pytest
import yaml

from launcher.k8s.chart import REDACTED, Rendered, render
from tests.k8s.helpers import SPECS, VALUE_SETS, rayjob_schema, run_cli, validate_object, values

INDEXED = sorted(n for n, v in VALUE_SETS.items() if not v.get("kuberay", {}).get("enabled"))
KUBERAY = sorted(set(VALUE_SETS) - set(INDEXED))
TOKEN_KEY = "auth_token"


def secret_of(rendered: Rendered) -> dict[str, Any]:
    (secret,) = [o for o in rendered.objects if o["kind"] == "Secret"]
    return secret


def token_of(rendered: Rendered) -> str:
    return base64.b64decode(secret_of(rendered)["data"][TOKEN_KEY]).decode()


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def test_indexed_and_kuberay_value_sets_both_exist() -> None:
    assert INDEXED and KUBERAY  # the parametrisations below are not empty


@pytest.mark.parametrize("name", INDEXED)
def test_the_run_gets_a_valid_token_secret(name: str) -> None:
    rendered = render(values(name), "ml")
    secret = secret_of(rendered)
    validate_object(secret)
    meta = secret["metadata"]
    assert meta["name"] == f"{rendered.run_name}-ray-auth"
    # The labels `vlaunch cancel` deletes by (launcher/k8s/submit.py `selector`).
    assert meta["labels"]["app.kubernetes.io/name"] == "finetune-job"
    assert meta["labels"]["app.kubernetes.io/instance"] == rendered.run_name
    assert secret["type"] == "Opaque" and secret["immutable"] is True
    assert set(secret["data"]) == {TOKEN_KEY}
    token = token_of(rendered)
    assert len(token) == 48 and set(token) <= set(string.ascii_letters + string.digits)


@pytest.mark.parametrize("name", INDEXED)
def test_every_ray_container_authenticates_with_the_secret(name: str) -> None:
    rendered = render(values(name), "ml")
    secret_name = secret_of(rendered)["metadata"]["name"]
    job = rendered.workload.obj
    assert job["kind"] == "Job"
    checked = containers(job["spec"]["template"])
    assert checked
    for c in checked:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, c["name"]
        assert env["RAY_AUTH_TOKEN"] == {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}},
        }, c["name"]
        assert len([e for e in c["env"] if e["name"].startswith("RAY_AUTH_")]) == 2


@pytest.mark.parametrize("name", INDEXED)
def test_the_token_is_only_in_the_secret(name: str) -> None:
    rendered = render(values(name), "ml")
    token = token_of(rendered)
    encoded = secret_of(rendered)["data"][TOKEN_KEY]
    others = [m for m in rendered.manifests if m.kind != "Secret"]
    assert {m.kind for m in others} >= {"ConfigMap", "Service", "Job"}
    for text in [m.text for m in others] + [rendered.notes]:
        assert token not in text and encoded not in text
    # and not in anything the user passes (values) or prints with --print-values
    assert token not in yaml.safe_dump(values(name))


def test_each_render_draws_a_new_token() -> None:
    tokens = {token_of(render(values("gpu-4x8"), "ml")) for _ in range(3)}
    assert len(tokens) == 3


@pytest.mark.parametrize("name", INDEXED)
def test_printed_text_redacts_the_token_and_objects_keep_it(name: str) -> None:
    rendered = render(values(name), "ml")
    token, encoded = token_of(rendered), secret_of(rendered)["data"][TOKEN_KEY]
    assert token not in rendered.text and encoded not in rendered.text
    printed = [d for d in yaml.safe_load_all(rendered.text) if d]
    (shown,) = [d for d in printed if d["kind"] == "Secret"]
    assert shown["data"] == {TOKEN_KEY: REDACTED}
    assert [d for d in printed if d["kind"] != "Secret"] == [
        o for o in rendered.objects if o["kind"] != "Secret"
    ]


def test_dry_run_does_not_print_the_token() -> None:
    """`vlaunch k8s --dry-run` prints the rendered Secret, so its data is redacted; the token
    drawn in that process is unknown here, hence: every Secret value is the redaction mark and
    the stream holds no 48-character token or its base64 anywhere."""
    code, out, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), "--dry-run"])
    assert code == 0, err
    docs = [d for d in yaml.safe_load_all(out) if d]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["data"] == {TOKEN_KEY: REDACTED}
    assert f'{TOKEN_KEY}: "{REDACTED}"' in out
    words = out.replace('"', " ").split()
    assert not [w for w in words if len(w) in (48, 64) and w.isalnum()]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_asks_the_operator_for_token_auth(name: str) -> None:
    rendered = render(values(name), "ml")
    assert "Secret" not in [m.kind for m in rendered.manifests]  # the operator makes it
    rayjob = rendered.workload.obj
    validate_object(rayjob)  # against the CRD, where authOptions is declared
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    declared = rayjob_schema()["properties"]["spec"]["properties"]["rayClusterSpec"]
    assert "token" in declared["properties"]["authOptions"]["properties"]["mode"]["enum"]
    templates = [cluster["headGroupSpec"]["template"], rayjob["spec"]["submitterPodTemplate"]]
    templates += [g["template"] for g in cluster.get("workerGroupSpecs", [])]
    for template in templates:
        for c in containers(template):
            # The operator sets RAY_AUTH_MODE/RAY_AUTH_TOKEN itself; ours would shadow them.
            assert not [e for e in c.get("env", []) if e["name"].startswith("RAY_AUTH_")]
