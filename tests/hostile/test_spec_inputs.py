"""Hostile job specs and command lines, in process (`launcher.cli.main`): each one is refused
with exit 2 and one message naming the key, no traceback, nothing written, in well under the
per-test timeout (several of these hung: a global batch near 1e18, a YAML alias bomb)."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.conftest import spec_data
from tests.hostile.helpers import assert_json_error, assert_refused, cli, tree, write_spec

pytestmark = pytest.mark.timeout(60, func_only=True)


def _refuse_validate(job: Path, *overrides: str, needles: tuple[str, ...] = ()) -> None:
    before = tree(job.parent)
    result = cli("validate", str(job), *overrides)
    assert_refused(result, *needles)
    assert tree(job.parent) == before


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", ["999999999999999989", "18446744073709551557", "1e18"])
def test_a_huge_global_batch_is_refused_at_once(job: Path, value: str) -> None:
    """The batch planner enumerated divisors in O(sqrt n): validate and plan hung."""
    for command in ("validate", "plan"):
        result = cli(command, str(job), f"train.global_batch_size={value}")
        assert_refused(result, "train.global_batch_size")


def _numeric_keys() -> list[str]:
    from vlaunch_core.section import Section
    from vlaunch_core.spec import JobSpec

    keys: list[str] = []

    def walk(model: Any, prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            inner = ann if isinstance(ann, type) and issubclass(ann, Section) else None
            if inner is None and len(args) == 1 and isinstance(args[0], type):
                inner = args[0] if issubclass(args[0], Section) else None
            if inner is not None:
                walk(inner, f"{prefix}{field.alias or name}.")
            elif "int" in str(ann) or "float" in str(ann):
                keys.append(f"{prefix}{field.alias or name}")

    walk(JobSpec, "")
    return keys


NUMERIC_KEYS = _numeric_keys()


@pytest.mark.timeout(300, func_only=True)
def test_every_number_takes_hostile_values_without_a_traceback_or_a_hang(job: Path) -> None:
    """Every numeric key of the schema with huge, negative, infinite and NaN values: validate
    and plan answer (accepted or one error), never a traceback, never a hang."""
    assert len(NUMERIC_KEYS) > 30, NUMERIC_KEYS
    for key in NUMERIC_KEYS:
        for value in ("1e300", "-1e300", "99999999999999999999999999", ".nan", "-.inf"):
            result = cli("plan", str(job), f"{key}={value}")
            assert result.code in (0, 1, 2), (key, value, result)
            assert "Traceback" not in result.text, (key, value, result.text[-2000:])
            if result.code == 2:
                assert result.err.count("error:") == 1, (key, value, result.err)


def test_inf_and_nan_are_refused(job: Path) -> None:
    _refuse_validate(job, "train.epochs=.inf", needles=("train.epochs",))
    _refuse_validate(job, "train.max_grad_norm=.nan", needles=("train.max_grad_norm",))


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name", ["名前", "Ünïcode", "a/b", ".", "..", " padded", "tab\there", "new\nline", ""]
)
def test_run_names_that_ray_slurm_or_the_filesystem_refuse(job: Path, name: str) -> None:
    data = spec_data(job)
    data["name"] = name
    write_spec(job, data)
    _refuse_validate(job, needles=("name",))


def test_a_hostile_but_printable_name_is_accepted(job: Path) -> None:
    """Shell metacharacters are quoted where the name lands (golden files pin it)."""
    data = spec_data(job)
    data["name"] = "x$(touch pwned)'\"; rm -rf ~ #`id`\\"
    write_spec(job, data)
    assert cli("validate", str(job)).code == 0


@pytest.mark.parametrize(
    "env", [{"A=B": "x"}, {"A-B": "x"}, {"1X": "x"}, {"": "x"}, {"OK": "nul\x00byte"}]
)
def test_environment_names_the_workers_cannot_take(job: Path, env: dict[str, str]) -> None:
    """`env: {A=B: x}` passed validation; the Ray workers died at start and `vlaunch local`
    waited forever."""
    data = spec_data(job)
    data["env"] = env
    write_spec(job, json.dumps(data))  # JSON is YAML: the NUL survives
    _refuse_validate(job, needles=("env",))


# --------------------------------------------------------------------------- YAML bounds


BOMB = """
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


@pytest.mark.timeout(30, func_only=True)
def test_an_alias_bomb_under_k8s_affinity_is_refused_at_once(job: Path) -> None:
    """10^8 values from a few hundred bytes: validate exhausted CPU and memory."""
    text = (
        job.read_text()
        + "k8s:\n  affinity:\n"
        + "\n".join("    " + line for line in BOMB.strip().splitlines())
    )
    write_spec(job, text)
    _refuse_validate(job, needles=("expands to more than",))


@pytest.mark.timeout(30, func_only=True)
def test_an_alias_bomb_in_an_override_is_refused(job: Path) -> None:
    value = "{" + ", ".join(line.replace(":", ":", 1) for line in BOMB.strip().splitlines()) + "}"
    _refuse_validate(job, f"k8s.affinity={value}", needles=("expands to more than",))


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",
        "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "x: " + "{a: " * 500 + "1" + "}" * 500,
    ],
    ids=["recursive-alias", "deep-flow", "deep-mapping"],
)
def test_recursive_and_deep_yaml(tmp_path: Path, text: str) -> None:
    path = write_spec(tmp_path / "job.yaml", text)
    _refuse_validate(path)


# --------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize("repeat", ["1e20", "100000000000000000000", "²", "0", "-1", "9" * 5000])
def test_mixture_repeats_out_of_range(job: Path, repeat: str) -> None:
    _refuse_validate(job, f"data.mixture=shapes_train*{repeat}", needles=("data.mixture",))


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "github": "ghp_" + "a1B2c3D4e5" * 4,
    "hugging face": "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "openai": "sk-proj-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8",
    "aws": "AKIA" + "ABCDEFGHIJKLMNOP",
    "slack": "xoxb-" + "123456789012-abcdefghijkl",
}
PLACES = {
    "env": "env.NOTE",
    "system prompt": "data.system_prompt",
    "node selector": "k8s.node_selector.team",
    "description": "data.datasets.shapes_train.description",
}


@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_secrets_under_innocent_keys_are_refused_without_echo(
    job: Path, secret: str, place: str
) -> None:
    before = tree(job.parent)
    for argv in (
        ("validate", str(job), f"{place}=token {secret} here"),
        ("k8s", str(job), "--dry-run", f"{place}={secret}"),
        ("slurm", str(job), "--dry-run", f"{place}={secret}"),
    ):
        result = cli(*argv)
        assert_refused(result, place, "secret")
        assert secret not in result.text and secret[8:] not in result.text
    data = assert_json_error(cli("validate", str(job), "--json", f"{place}={secret}"), place)
    assert secret not in json.dumps(data)
    assert tree(job.parent) == before


def test_a_tracking_uri_with_a_password_is_refused(job: Path) -> None:
    uri = "https://alice:s3cr3t-pa55@mlflow.example.com"
    result = cli("validate", str(job), "tracking.mlflow.tracking_uri=" + uri)
    assert_refused(result, "tracking.mlflow.tracking_uri", "password")
    assert "s3cr3t-pa55" not in result.text


@pytest.mark.parametrize(
    "override",
    [
        "env.HF_DATASETS=hf_data_v2",
        "data.system_prompt=use sk-learn and scikit",
        "model.revision=0123456789abcdef0123456789abcdef01234567",
        "env.URL=https://mlflow.example.com:5000/path",
    ],
)
def test_look_alikes_are_not_secrets(job: Path, override: str) -> None:
    assert cli("validate", str(job), override).code == 0


def test_everything_that_writes_a_spec_redacts_it() -> None:
    """Validation refuses secrets; `JobSpec.document` (every writer) still redacts one that a
    spec read without checks holds."""
    from vlaunch_core.spec_load import spec_from_dict

    secret = SECRETS["hugging face"]
    spec = spec_from_dict(
        {
            "name": "r",
            "model": {"name_or_path": "tiny:llava"},
            "data": {"mixture": "a", "system_prompt": f"key {secret}"},
            "tracking": {"mlflow": {"tracking_uri": "https://u:pw@host"}},
        },
        check=False,
    )
    text = spec.to_yaml()
    assert secret not in text and "u:pw@" not in text and "<redacted>" in text


# --------------------------------------------------------------------------- overrides


def test_text_overrides_take_the_text_as_written(job: Path) -> None:
    result = cli("validate", str(job), "name=abc #x", "env.NOTE=a: b # c", "slurm.account=123")
    assert result.code == 0, result
    assert "name: 'abc #x'" in result.out
    assert "NOTE: 'a: b # c'" in result.out
    assert "account: '123'" in result.out


def test_a_flag_and_its_override_agree(job: Path) -> None:
    by_flag = cli("slurm", str(job), "--dry-run", "--account", "a #b")
    by_override = cli("slurm", str(job), "--dry-run", "slurm.account=a #b")
    assert by_flag.code == by_override.code == 0, (by_flag, by_override)
    assert by_flag.out == by_override.out
    assert "--account='a #b'" in by_flag.out or '--account="a #b"' in by_flag.out


def test_fix_hints_are_not_cut_at_e_g(job: Path) -> None:
    """The hint is the key's first sentence: it used to end at the period of "e.g"."""
    result = cli("validate", str(job), "slurm.time=soon")
    assert_refused(result, "slurm.time")
    hint = result.err.split("fix:", 1)[1]
    assert "e.g. `04:00:00` or `1-00:00:00`" in hint, hint


# --------------------------------------------------------------------------- --json


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{job}", "--json", "train.lr=5"],
        ["validate", "missing.yaml", "--json"],
        ["plan", "{job}", "--json", "--nodes", "x"],
        ["plan", "{job}", "--json", "nonsense"],
        ["plan", "{job}", "--json", "train.global_batch_size=7", "resources.gpus_per_node=2"],
        ["data", "check", "missing.json", "--json"],
        ["data", "check", "--json"],
        ["data", "check", "{job}", "--json", "--limit", "x"],
        ["status", "--json", "bogus"],
        ["status", "--json", "local:/nonexistent/run"],
        ["models", "--json", "--bogus"],
        ["profiles", "--json", "extra"],
        ["eval", "/nonexistent/run", "--json"],
    ],
)
def test_json_errors_are_json(job: Path, argv: list[str]) -> None:
    result = cli(*[a.replace("{job}", str(job)) for a in argv])
    assert_json_error(result)


# --------------------------------------------------------------------------- output dirs


def test_an_output_dir_that_is_a_file_is_refused_before_ray(job: Path) -> None:
    blocker = job.parent / "blocker"
    blocker.write_text("not a folder")
    before = tree(job.parent)
    for out in (str(blocker), str(blocker / "below")):
        result = cli("local", str(job), "--dry-run", f"output.dir={out}")
        assert_refused(result, "output.dir", "is a file")
    assert tree(job.parent) == before


def test_a_read_only_output_dir_is_refused_before_ray(job: Path) -> None:
    import os
    import subprocess

    ro = job.parent / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], check=False)
        if mounted.returncode != 0:
            pytest.skip("cannot bind-mount read-only here")
    else:
        ro.chmod(0o555)
    try:
        result = cli("local", str(job), "--dry-run", f"output.dir={ro}")
        assert_refused(result, "output.dir", "not writable")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        ro.chmod(0o755)
