"""Shared by the hostile-input suite: a valid job on the session's shapes data, and (once per
session) a finished tiny run to attack."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.trainer.helpers import explain, run_trainer, write_job


@pytest.fixture(scope="session")
def described_model(shapes_data: Path) -> None:
    """Validation describes the job's model once (a subprocess, cached): do it before the
    timed tests."""
    from vlaunch_core.models.catalog import describe
    from vlaunch_core.spec import ModelSpec

    describe(ModelSpec(name_or_path="tiny:llava"))


@pytest.fixture
def job(tmp_path: Path, shapes_data: Path, described_model: None) -> Path:
    """A valid tiny-LLaVA job (CPU, 2 steps) whose runs go under tmp_path/runs."""
    return write_job(
        tmp_path / "job",
        shapes_data,
        train={"max_steps": 2, "checkpoint_every": 1, "global_batch_size": 4,
               "micro_batch_size": 1},
        resources={"profile": "cpu", "gpus_per_node": 1},
    )  # fmt: skip


def spec_data(job: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(job.read_text())
    return data


@pytest.fixture(scope="session")
def finished_run_template(tmp_path_factory: pytest.TempPathFactory, shapes_data: Path) -> Path:
    """A finished 2-step run (checkpoints at steps 1 and 2, adapter export; cosine with one
    warmup step, so its LR ends at 0), trained once per session with `python -m trainer.run`;
    tests work on copies (`finished_run`)."""
    folder = tmp_path_factory.mktemp("finished")
    job = write_job(
        folder,
        shapes_data,
        name="victim",
        train={"max_steps": 2, "checkpoint_every": 1, "global_batch_size": 4,
               "micro_batch_size": 1, "warmup_steps": 1},
        resources={"profile": "cpu", "gpus_per_node": 1},
    )  # fmt: skip
    proc = run_trainer(job)
    assert proc.returncode == 0, explain(proc)
    return folder


@pytest.fixture
def finished_run(tmp_path: Path, finished_run_template: Path) -> Path:
    """A copy of the finished run's folder: `<copy>/victim.yaml`, `<copy>/runs/victim/`
    (the spec's output.dir rewritten to the copy)."""
    dst = tmp_path / "finished"
    shutil.copytree(finished_run_template, dst, symlinks=True)
    job = dst / "victim.yaml"
    data = yaml.safe_load(job.read_text())
    data["output"]["dir"] = str(dst / "runs")
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst
