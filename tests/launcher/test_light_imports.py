"""The launcher starts without the training stack: `vlaunch --help`, `validate` and `plan`
never import torch, transformers, ray, deepspeed, peft or the kubernetes client."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "ray", "deepspeed", "peft", "kubernetes", "av")

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


def run_probe(argv: list[str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[-1][2:])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["validate", "examples/demo.yaml"],
        ["plan", "examples/demo.yaml", "--json"],
        [
            "plan",
            "examples/demo.yaml",
            "--nodes",
            "16",
            "--gpus-per-node",
            "8",
            "train.global_batch_size=512",
            "train.grad_accum_steps=2",
            "--json",
        ],
        ["profiles"],
        ["models", "--presets"],
    ],
    ids=" ".join,
)
def test_no_heavy_imports(argv: list[str]) -> None:
    result = run_probe(argv)
    assert result["code"] in (0, None), result
    assert result["heavy"] == [], f"imported {result['heavy']} for vlaunch {' '.join(argv)}"
