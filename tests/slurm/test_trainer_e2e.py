"""PHASE 2 (scaffolding): the real trainer through `vlaunch slurm` on the local cluster.

Skipped unless VLAUNCH_SLURM_E2E=1: the trainer's `vlaunch run` is being written at the same
time as this file. Phase 2 turns the opt-in into the default. What these tests rely on from
`vlaunch run SPEC --ray-address HEAD:PORT` (launcher/commands/run.py):

- it joins the Ray cluster the job script started (two nodes here) and trains the spec;
- exit 0 when the run finished, with `<output.dir>/<name>/adapter/` written;
- on SIGUSR1 or SIGTERM it saves a checkpoint at the next step boundary and exits 75;
- started again with the same spec, it resumes from the latest complete checkpoint in
  `<output.dir>/<name>/`, so the final weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.slurm.control import status
from launcher.slurm.submit import run_command
from tests.conftest import REPO
from tests.slurm.helpers import cli, wait_ended, wait_for, write_job

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VLAUNCH_SLURM_E2E") != "1",
        reason="phase 2: set VLAUNCH_SLURM_E2E=1 once `vlaunch run` trains",
    ),
]

STEPS = 8


@pytest.fixture
def trainer_env(slurm_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jobs find the real `vlaunch` (this virtualenv) first on PATH."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    venv_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([venv_bin, os.environ["PATH"]]))
    return slurm_cluster


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic shapes dataset and a registry naming it."""
    root = tmp_path_factory.mktemp("shapes")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher.cli",
            "data",
            "synth",
            str(root / "data"),
            "--train",
            "64",
            "--eval",
            "16",
            "--video-train",
            "0",
            "--video-eval",
            "0",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    registry = {
        "shapes_train": {"data_path": "data/train.json", "media_dir": "data"},
        "shapes_eval": {"data_path": "data/eval.json", "media_dir": "data"},
    }
    (root / "registry.yaml").write_text(yaml.safe_dump(registry))
    return root / "registry.yaml"


def _tiny_job(tmp_path: Path, registry: Path, name: str) -> Path:
    """examples/demo.yaml, shrunk: two nodes of the cpu profile, a few steps."""
    data: dict[str, Any] = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data["name"] = name
    data["data"]["registry"] = [str(registry)]
    data["train"].update(max_steps=STEPS, checkpoint_every=2, global_batch_size=4)
    data["resources"].update(profile="cpu", nodes=2, gpus_per_node=1)
    data["output"] = {"dir": str(tmp_path / "runs")}
    data["slurm"] = {"partition": "debug", "cpus_per_task": 2}
    return write_job(tmp_path / f"{name}.yaml", data)


def _submit(spec: Path, *flags: str) -> str:
    rc, out, err = cli("slurm", str(spec), "--nodes", "2", *flags)
    assert rc == 0, err
    return out.strip().splitlines()[-1]


def _adapter(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    (weights,) = (run_dir / "adapter").glob("*.safetensors")
    return load_file(str(weights))


def test_tiny_model_trains_across_two_slurm_nodes(
    trainer_env: Path, shapes: Path, tmp_path: Path
) -> None:
    handle = _submit(_tiny_job(tmp_path, shapes, "e2e"))
    rc, out, _ = cli("status", handle)
    assert rc == 0 and handle in out
    final = wait_ended(handle, timeout=900)
    log = Path(final.detail["log"]).read_text()
    assert final.state == "COMPLETED", log
    assert "2 of 2 nodes alive" in log
    run_dir = tmp_path / "runs" / "e2e"
    assert (run_dir / "adapter").is_dir() and _adapter(run_dir)
    rc, out, _ = cli("logs", handle)
    assert rc == 0 and out == log


def test_cancel_a_training_job(trainer_env: Path, shapes: Path, tmp_path: Path) -> None:
    spec = _tiny_job(tmp_path, shapes, "e2e-cancel")
    handle = _submit(spec, "train.max_steps=100000")
    wait_for(lambda: status(handle).state == "RUNNING", 300, "the job to run")
    rc, _, err = cli("cancel", handle)
    assert rc == 0, err
    assert wait_ended(handle, timeout=300).state == "CANCELLED"


@pytest.mark.parametrize("interrupt", ["usr1", "requeue"])
def test_interrupted_run_resumes_to_equal_weights(
    trainer_env: Path, shapes: Path, tmp_path: Path, interrupt: str
) -> None:
    baseline = _submit(_tiny_job(tmp_path, shapes, "e2e-baseline"))
    assert wait_ended(baseline, timeout=900).state == "COMPLETED"

    handle = _submit(_tiny_job(tmp_path, shapes, "e2e-interrupted"))
    run_dir = tmp_path / "runs" / "e2e-interrupted"
    wait_for(lambda: list(run_dir.glob("checkpoint_*")), 900, "a first checkpoint")
    jid = handle.split(":")[1]
    if interrupt == "usr1":  # what --signal=B:USR1@N delivers before the time limit
        run_command(["scancel", "--batch", "--signal=USR1", jid]).check_returncode()
    else:  # preemption-style: Slurm requeues the job
        run_command(["scontrol", "requeue", jid]).check_returncode()
    final = wait_ended(handle, timeout=900)
    assert final.state == "COMPLETED" and final.detail["restarts"] >= 1

    import torch

    expected = _adapter(tmp_path / "runs" / "e2e-baseline")
    got = _adapter(run_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
