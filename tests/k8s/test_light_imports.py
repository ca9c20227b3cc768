"""`vlaunch k8s --help`, `--dry-run` and `--print-values` import neither the training stack nor
the `kubernetes` client (only a submission talks to a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.k8s.helpers import SPECS

HEAVY = ("torch", "transformers", "ray", "deepspeed", "peft", "kubernetes")
PROBE = """
import json, sys
from launcher.cli import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("@@" + json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["k8s", "--help"],
        ["k8s", str(SPECS / "tiny.yaml"), "--dry-run", "--nodes", "2"],
        ["k8s", str(SPECS / "tiny.yaml"), "--print-values", "--kuberay"],
    ],
    ids=["help", "dry-run", "print-values"],
)
def test_no_heavy_imports(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1][2:])
    assert result["code"] in (0, None), proc.stderr
    assert result["heavy"] == [], f"imported {result['heavy']}"
