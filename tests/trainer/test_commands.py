"""`vlaunch local` / `vlaunch run` refuse clearly before starting anything, and the DeepSpeed
config carries the plan's batch numbers exactly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.commands.local import device_overrides
from tests.trainer.helpers import PYTHON, REPO, child_env, write_job
from trainer.strategies.zero import deepspeed_config
from vlaunch_core.errors import UserError
from vlaunch_core.planner import resolve_batch
from vlaunch_core.spec import TrainSpec


def _vlaunch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "launcher.cli", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has GPUs")
def test_gpus_asked_for_but_absent_is_a_user_error(tmp_path: Path) -> None:
    proc = _vlaunch("local", str(REPO / "examples" / "demo.yaml"), "--gpus", "2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no NVIDIA GPU is visible" in proc.stderr and "--gpus 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_device_flags_are_spec_overrides() -> None:
    assert device_overrides(0, None) == ["resources.profile=cpu"]
    assert device_overrides(None, 3) == ["resources.profile=cpu", "resources.gpus_per_node=3"]
    assert device_overrides(None, None) == []
    with pytest.raises(UserError):
        device_overrides(None, 0)


def test_local_refuses_a_plan_that_does_not_fit(tmp_path: Path, shapes_data: Path) -> None:
    job = write_job(
        tmp_path,
        shapes_data,
        name="huge",
        model={"name_or_path": "random:llava-1.5-13b"},
        tuning={"preset": "fft"},
        train={"micro_batch_size": 2, "global_batch_size": 8},
    )
    proc = _vlaunch("local", str(job), "--workers", "2", "--no-plan", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "does not fit" in proc.stderr and "vlaunch plan" in proc.stderr
    assert not (tmp_path / "runs" / "huge").exists()  # nothing was started


def test_run_without_a_cluster_is_a_user_error(tmp_path: Path) -> None:
    proc = _vlaunch(
        "run",
        str(REPO / "examples" / "demo.yaml"),
        "--ray-address",
        "127.0.0.1:1",
        "--wait-for-workers",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "no Ray cluster to join at '127.0.0.1:1'" in proc.stderr


def test_deepspeed_config_matches_the_plan() -> None:
    batch = resolve_batch(64, 8, micro=2)
    train = TrainSpec(global_batch_size=64, max_grad_norm=0.5)
    cfg = deepspeed_config("zero3", "bf16", train, batch)
    assert (
        cfg["train_batch_size"],
        cfg["train_micro_batch_size_per_gpu"],
        cfg["gradient_accumulation_steps"],
    ) == (64, 2, 4)
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["bf16"]["enabled"]
    assert cfg["gradient_clipping"] == 0.5 and not cfg["fp16"]["enabled"]
    off = deepspeed_config("offload", "fp16", train, batch)["zero_optimization"]
    assert off["stage"] == 3
    assert off["offload_optimizer"]["device"] == off["offload_param"]["device"] == "cpu"
    assert deepspeed_config("zero2", "fp32", train, batch)["zero_optimization"] == {"stage": 2}
