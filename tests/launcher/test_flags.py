"""One flag generator, one quoting rule (launcher/commands/flags.py), for the resource flags,
the Slurm options and the Kubernetes options alike: plain-text keys are JSON-quoted (so
`--account 123` stays the string "123" and YAML words stay words), booleans are switches,
numbers are numbers, everything else is YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import UsageError, build_parser
from launcher.commands.flags import DEST, flag_overrides
from vlaunch_core.spec_load import load_spec

JOB = {
    "name": "flags",
    "model": {"name_or_path": "tiny:llava"},
    "data": {"mixture": "shapes", "datasets": {"shapes": {"data_path": "/data/train.json"}}},
    "resources": {"profile": "cpu"},
}

#: (command, flags, the override they stand for, the value the spec gets)
CASES: list[tuple[str, list[str], str, Any]] = [
    ("plan", ["--nodes", "4"], "resources.nodes=4", 4),
    ("plan", ["--gpus-per-node", "2"], "resources.gpus_per_node=2", 2),
    ("plan", ["--profile", "h100-80gb"], 'resources.profile="h100-80gb"', "h100-80gb"),
    ("local", ["--profile", "cpu"], 'resources.profile="cpu"', "cpu"),
    ("k8s", ["--profile", "a100-80gb"], 'resources.profile="a100-80gb"', "a100-80gb"),
    ("slurm", ["--account", "123"], 'slurm.account="123"', "123"),
    ("slurm", ["--time", "10"], 'slurm.time="10"', "10"),
    ("slurm", ["--qos", "null"], 'slurm.qos="null"', "null"),
    ("slurm", ["--partition", "x: y"], 'slurm.partition="x: y"', "x: y"),
    ("slurm", ["--constraint", "a&(b|c)"], 'slurm.constraint="a&(b|c)"', "a&(b|c)"),
    ("slurm", ["--requeue", "chain"], 'slurm.requeue="chain"', "chain"),
    ("slurm", ["--max-restarts", "5"], "slurm.max_restarts=5", 5),
    ("slurm", ["--exclusive"], "slurm.exclusive=true", True),
    (
        "slurm",
        ["--container-mounts", "/a b:/c", "--container-mounts", "1"],
        'slurm.container_mounts=["/a b:/c", "1"]',
        ["/a b:/c", "1"],
    ),
    ("slurm", ["--setup", "x='1'; y"], """slurm.setup=["x='1'; y"]""", ["x='1'; y"]),
    ("k8s", ["--namespace", "123"], 'k8s.namespace="123"', "123"),
    ("k8s", ["--shm-size", "8"], 'k8s.shm_size="8"', "8"),
    ("k8s", ["--image", "r/x:1.0"], 'k8s.image="r/x:1.0"', "r/x:1.0"),
    ("k8s", ["--image-pull-policy", "Always"], 'k8s.image_pull_policy="Always"', "Always"),
    ("k8s", ["--volume-size", "1Ti"], 'k8s.volume.size="1Ti"', "1Ti"),
    ("k8s", ["--kuberay"], "k8s.kuberay.enabled=true", True),
    ("k8s", ["--kuberay-ray-version", "2.60"], 'k8s.kuberay.ray_version="2.60"', "2.60"),
    ("k8s", ["--no-volume"], "k8s.volume.enabled=false", False),
    ("k8s", ["--backoff-limit", "5"], "k8s.backoff_limit=5", 5),
    ("k8s", ["--ttl-seconds-after-finished", "null"], "k8s.ttl_seconds_after_finished=null", None),
    ("slurm", ["--ray-port", "31000"], "slurm.ray_port=31000", 31000),
    ("k8s", ["--hf-token", "hf:tok"], "k8s.hf_token=hf:tok", {"name": "hf", "key": "tok"}),
    (
        "k8s",
        ["--tolerations", "[{key: a, operator: Exists}]"],
        "k8s.tolerations=[{key: a, operator: Exists}]",
        [{"key": "a", "operator": "Exists"}],
    ),
    ("k8s", ["--node-selector", "{a: '1'}"], "k8s.node_selector={a: '1'}", {"a": "1"}),
]


def _value(spec: Any, dotted: str) -> Any:
    value = spec
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump() if hasattr(value, "model_dump") else value


@pytest.mark.parametrize(("command", "argv", "override", "value"), CASES, ids=str)
def test_flags_quote_one_way(
    tmp_path: Path, command: str, argv: list[str], override: str, value: Any
) -> None:
    args, extra = build_parser().parse_known_args([command, "job.yaml", *argv])
    assert extra == []
    assert flag_overrides(args) == [override]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(JOB))
    dotted = override.partition("=")[0]
    assert _value(load_spec(job, [override]), dotted) == value


def test_every_spec_flag_comes_from_the_one_generator() -> None:
    """No command builds spec flags of its own: every flag that sets a spec key has the
    generator's dest, and `flag_overrides` reads them all."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    for name in ("plan", "local", "slurm", "k8s"):
        dests = {a.dest for a in sub[name]._actions}
        spec_dests = {d for d in dests if d.startswith(DEST)}
        assert f"{DEST}resources__profile" in spec_dests, name
        assert not {d for d in dests if d.startswith(("_slurm__", "_k8s__"))}, name


@pytest.mark.parametrize(
    "argv",
    [
        ["slurm", "job.yaml", "--requeue", "sometimes"],
        ["slurm", "job.yaml", "--max-restarts", "null"],  # not optional: a number
        ["k8s", "job.yaml", "--backoff-limit", "three"],
    ],
)
def test_choices_and_numbers_are_checked_on_the_command_line(argv: list[str]) -> None:
    with pytest.raises(UsageError):  # main() prints it (as JSON with --json), exit 2
        build_parser().parse_known_args(argv)
