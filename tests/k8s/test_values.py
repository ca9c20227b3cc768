"""Chart values from the job spec, and the `vlaunch k8s` flags generated from the `k8s:` options:
one source of truth for each option."""

from __future__ import annotations

import argparse
from typing import Any

import helm_python
import pytest
import yaml

from launcher.commands.flags import flag_overrides
from launcher.commands.k8s import add_arguments
from launcher.k8s.values import camel, chart_values, paths_outside_volume, pod_output_dir
from tests.k8s.helpers import CHART, SPECS
from vlaunch_core.errors import ProblemReport, UserError
from vlaunch_core.k8s_options import KubernetesOptions
from vlaunch_core.plan import make_plan
from vlaunch_core.section import Section
from vlaunch_core.spec import JobSpec
from vlaunch_core.spec_load import load_spec


def spec(*overrides: str) -> JobSpec:
    return load_spec(SPECS / "tiny.yaml", list(overrides))


def leaf_keys(model: type[Section], prefix: str = "k8s") -> list[str]:
    """Dotted keys of every option that is not itself a section."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            out += leaf_keys(ann, f"{prefix}.{name}")
        else:
            out.append(f"{prefix}.{name}")
    return out


def test_values_cover_the_chart_exactly() -> None:
    s = spec()
    vals = chart_values(s, make_plan(s))
    with helm_python.Chart.load(str(CHART)) as chart:
        defaults, schema = chart.values, chart.schema
    assert schema is not None
    assert set(vals) == set(defaults)
    in_file = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(vals) == list(in_file)  # and in the order values.yaml documents them
    for key in ("volume", "kuberay"):
        assert set(vals[key]) == set(defaults[key])
    options = {camel(name) for name in KubernetesOptions.model_fields} - {"namespace"}
    assert options <= set(vals)


def test_chart_defaults_match_the_spec_defaults() -> None:
    """values.yaml repeats the spec's defaults for `helm install` users: they must not drift."""
    s = spec()
    vals = chart_values(s, make_plan(s))
    with helm_python.Chart.load(str(CHART)) as chart:
        defaults = chart.values
    computed = {
        "runName",
        "job",
        "nodes",
        "gpusPerNode",
        "outputDir",
        "cpu",
        "memory",
        "image",
    }
    for key, default in defaults.items():
        if key in computed:
            continue
        expected = vals[key]
        if key == "image":  # required: no default in either
            assert (default, KubernetesOptions().image) == ("", None)
            continue
        if expected is None:  # None in the spec, "" or {} in values.yaml (Helm drops nulls)
            assert default in ("", {}), key
        elif isinstance(expected, dict):
            for sub, value in expected.items():
                assert default[sub] == (value if value is not None else ""), f"{key}.{sub}"
        else:
            assert default == expected, key


def test_values_follow_the_spec_and_plan() -> None:
    s = spec(
        "resources.nodes=4",
        "resources.profile=h100-80gb",
        "resources.gpus_per_node=8",
        "k8s.hf_token=hf-token:token",
        "k8s.kuberay=true",
        "k8s.shm_size=64",
    )
    vals = chart_values(s, make_plan(s))
    assert (vals["nodes"], vals["gpusPerNode"]) == (4, 8)
    assert vals["cpu"] == "80"  # 10 cores per GPU
    assert vals["memory"] == "800Gi"  # 100 GiB per GPU
    assert vals["hfToken"] == {"name": "hf-token", "key": "token"}
    assert vals["kuberay"] == {"enabled": True, "rayVersion": "2.60.0"}
    assert vals["shmSize"] == "64"
    assert vals["runName"] == "Tiny LLaVA on K8s"
    assert vals["job"] == {"spec": s.to_yaml(), "plan": make_plan(s).to_json_text()}
    cpu = spec()
    cpu_vals = chart_values(cpu, make_plan(cpu))
    assert (cpu_vals["gpusPerNode"], cpu_vals["cpu"], cpu_vals["memory"]) == (0, "2", "8Gi")
    explicit = spec("k8s.cpu=3", "k8s.memory=5Gi")
    assert chart_values(explicit, make_plan(explicit))["cpu"] == "3"


@pytest.mark.parametrize(
    ("output_dir", "expected"),
    [
        ("runs", "/workspace/runs"),
        ("./out/../runs", "/workspace/runs"),
        ("/workspace/team/runs", "/workspace/team/runs"),
        ("s3://bucket/runs", "s3://bucket/runs"),
    ],
)
def test_output_dir_inside_the_pods(output_dir: str, expected: str) -> None:
    assert pod_output_dir(spec(f"output.dir={output_dir}")) == expected


@pytest.mark.parametrize("output_dir", ["/scratch/runs", "../../runs"])
def test_output_dir_off_the_volume_is_refused(output_dir: str) -> None:
    with pytest.raises(UserError, match="not on the pods' volume") as caught:
        pod_output_dir(spec(f"output.dir={output_dir}"))
    assert caught.value.hint and "/workspace" in caught.value.hint


def test_inputs_off_the_volume_are_listed() -> None:
    assert paths_outside_volume(spec()) == []
    moved = spec("k8s.volume.mount_path=/data")
    assert paths_outside_volume(moved) == [
        "/workspace/data/shapes/train.jsonl",
        "/workspace/data/shapes",
    ]


def parse(*argv: str) -> list[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return flag_overrides(parser.parse_args(["job.yaml", *argv]))


def test_every_option_has_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    for key in leaf_keys(KubernetesOptions):
        assert "_spec__" + key.replace(".", "__") in dests, key


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--namespace", "ml"], ['k8s.namespace="ml"']),
        (["--kuberay"], ["k8s.kuberay.enabled=true"]),
        (["--no-volume"], ["k8s.volume.enabled=false"]),
        (["--volume-existing-claim", "ckpt"], ['k8s.volume.existing_claim="ckpt"']),
        (["--hf-token", "hf:token"], ["k8s.hf_token=hf:token"]),
        (
            ["--tolerations", "[{key: a, operator: Exists}]"],
            ["k8s.tolerations=[{key: a, operator: Exists}]"],
        ),
        (
            ["--nodes", "4", "--gpus-per-node", "8"],
            ["resources.nodes=4", "resources.gpus_per_node=8"],
        ),
    ],
)
def test_flags_are_spec_overrides(argv: list[str], expected: list[str]) -> None:
    assert parse(*argv) == expected


def test_flag_values_reach_the_spec() -> None:
    overrides = parse(
        "--tolerations",
        "[{key: a, operator: Exists}]",
        "--hf-token",
        "hf:tok",
        "--no-volume",
        "--shm-size",
        "8",
        "--kuberay",
    )
    k8s = spec(*overrides).k8s
    assert k8s.tolerations == [{"key": "a", "operator": "Exists"}]
    assert (k8s.hf_token.name, k8s.hf_token.key) == ("hf", "tok")  # type: ignore[union-attr]
    assert (k8s.volume.enabled, k8s.shm_size, k8s.kuberay.enabled) == (False, "8", True)


@pytest.mark.parametrize(
    ("override", "where", "text"),
    [
        ("k8s.namespace=Team_A", "k8s.namespace", "not a namespace name"),
        ("k8s.shm_size=lots", "k8s.shm_size", "not a Kubernetes quantity"),
        ("k8s.hf_token=just-a-name", "k8s.hf_token", "SECRET:KEY"),
        ("k8s.volume.mount_path=data", "k8s.volume.mount_path", "absolute path"),
        ("k8s.kuberay.enable=true", "k8s.kuberay.enable", "unknown key 'enable'"),
    ],
)
def test_bad_options_are_reported_by_key(override: str, where: str, text: str) -> None:
    with pytest.raises(ProblemReport) as caught:
        spec(override)
    problems: list[Any] = caught.value.problems
    assert any(p.where == where and text in p.message for p in problems), problems
