"""`vlaunch k8s --dry-run` prints exactly the chart's rendering for the values it computes.

Golden files: `golden/<case>.yaml` (the dry-run output) and `golden/<case>.values.yaml`
(`--print-values`). The dry-run prints the run's Ray token Secret with its data redacted, so the
random token does not reach the golden files; the direct rendering below is redacted by this
test itself (`redact_token`) before the comparison. Regenerate them after a deliberate change with
`VLAUNCH_REGEN_GOLDEN=1 pytest tests/k8s -k golden` (what `make golden` runs) and review the diff.

The ConfigMap carries the launch's plan, and the `cpu` profile describes the machine that
plans (its cores and RAM): `fixed_cpu_machine` pins that machine, so the golden files are the
same wherever the tests run.
"""

from __future__ import annotations

import base64
import os
import re

import helm_python
import pytest
import yaml

from tests.k8s.helpers import CHART, GOLDEN, SPECS, run_cli
from vlaunch_core import profiles

REGEN = os.environ.get("VLAUNCH_REGEN_GOLDEN") == "1"
CASES: dict[str, list[str]] = {
    "cpu-1node": [],
    "gpu-4x8": [
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--profile",
        "h100-80gb",
        "--namespace",
        "ml",
        "--image",
        "ghcr.io/vlaunch/vlaunch:0.1.0-cuda",
        "--hf-token",
        "hf-token:token",
        "--wandb-api-key",
        "wandb:api-key",
        "--volume-storage-class",
        "fast-rwx",
        "--priority-class",
        "training",
        "--node-selector",
        "{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
        "--tolerations",
        "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
    ],
    "kuberay-2x8": [
        "--kuberay",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--profile",
        "a100-80gb",
        "--namespace",
        "ml",
        "--image",
        "ghcr.io/vlaunch/vlaunch:0.1.0-cuda",
        "--volume-existing-claim",
        "team-checkpoints",
        "output.dir=/workspace/team/runs",
    ],
}
SOURCE = re.compile(r"^---\n# Source: (\S+)\n", re.MULTILINE)
TOKEN_LINE = re.compile(r'^(  auth_token: )"([A-Za-z0-9+/=]+)"$', re.MULTILINE)


@pytest.fixture(autouse=True)
def fixed_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local `cpu` profile of a 2-core machine with 16 GiB of RAM."""
    pinned = profiles.HardwareProfile(
        name="cpu",
        description="this machine's CPUs (gloo backend)",
        gpu_memory_mib=16 * 1024,
        bf16=True,
        gpus_per_node=1,
        host_memory_gib=16.0,
        cpus_per_node=2,
        peak_tflops=0.0,
        is_gpu=False,
    )
    monkeypatch.setattr(profiles, "_local_cpu_profile", lambda: pinned)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.write_text(text)
    assert path.is_file(), f"missing {path}: run VLAUNCH_REGEN_GOLDEN=1 pytest tests/k8s -k golden"
    assert text == path.read_text(), f"{path} differs: regenerate it if the change is intended"


def dry_run(case: str, *extra: str) -> str:
    code, out, err = run_cli(["k8s", str(SPECS / "tiny.yaml"), *CASES[case], *extra])
    assert code == 0, err
    return out


def redact_token(text: str) -> str:
    """The Ray token Secret's data as `--dry-run` prints it; checks there was a real token."""
    ((_, token),) = TOKEN_LINE.findall(text)
    assert len(base64.b64decode(token).decode()) == 48
    return TOKEN_LINE.sub(r'\1"<redacted>"', text)


def split_sources(stream: str) -> dict[str, str]:
    """`# Source:` path -> manifest text, from a dry-run stream."""
    parts = SOURCE.split(stream)
    assert parts[0] == "", "the stream starts with a `---` and `# Source:` header"
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_dry_run(case: str) -> None:
    check_golden(f"{case}.yaml", dry_run(case, "--dry-run"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_values(case: str) -> None:
    check_golden(f"{case}.values.yaml", dry_run(case, "--print-values"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_dry_run_is_the_chart_rendering(case: str) -> None:
    """Render the chart straight through the Helm engine with the golden values (no vlaunch
    code involved) and compare every template with what `--dry-run` printed."""
    values = yaml.safe_load((GOLDEN / f"{case}.values.yaml").read_text())
    namespace = "ml" if "--namespace" in CASES[case] else "default"
    with helm_python.Chart.load(str(CHART)) as chart:
        direct = chart.render(values, name="any-release", namespace=namespace)
    expected = {
        source: text.strip() + "\n"
        for source, text in direct.items()
        if not source.endswith("NOTES.txt") and text.strip()
    }
    secret = "finetune-job/templates/secret.yaml"
    assert (secret in expected) is ("--kuberay" not in CASES[case])  # KubeRay makes its own
    if secret in expected:
        expected[secret] = redact_token(expected[secret])
    printed = split_sources((GOLDEN / f"{case}.yaml").read_text())
    assert printed == expected
    assert list(yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()))  # one valid stream
