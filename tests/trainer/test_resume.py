"""Exact resume after a SIGKILL, and resume on a different number of ranks (torchrun, gloo).

Every run here is 2 processes of `python -m trainer.run` under torchrun, DDP on CPU, fp32,
LoRA dropout on (so the RNG handling is exercised): 6 optimizer steps of 8 samples,
checkpoints every 2 steps. The killed run gets a real SIGKILL on rank 1 right after step 3,
so it resumes from the checkpoint of step 2 and recomputes step 3.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.trainer.helpers import (
    explain,
    max_abs_diff,
    records,
    run_trainer,
    trained_weights,
    write_job,
)

pytestmark = pytest.mark.slow

STEPS = 6


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, shapes_data: Path) -> Path:
    """6 steps without interruption; returns the run directory."""
    job = write_job(tmp_path_factory.mktemp("straight"), shapes_data, name="run")
    proc = run_trainer(job, nproc=2)
    assert proc.returncode == 0, explain(proc)
    return job.parent / "runs" / "run"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, shapes_data: Path) -> Path:
    """The same run, rank 1 SIGKILLed after step 3; returns the job file (run left as is)."""
    job = write_job(tmp_path_factory.mktemp("killed"), shapes_data, name="run")
    proc = run_trainer(job, nproc=2, VLAUNCH_FAULT="kill:1:3")
    assert proc.returncode != 0, explain(proc)
    run = job.parent / "runs" / "run"
    assert (run / ".fault-kill-1-3").is_file(), explain(proc)  # the kill really happened
    assert [p.name for p in sorted(run.glob("checkpoint_*"))] == ["checkpoint_000002"]
    assert not (run / "adapter").exists()
    return job


def _copy_job(job: Path, dest: Path) -> Path:
    shutil.copytree(job.parent, dest)
    copy = dest / job.name
    copy.write_text(job.read_text().replace(str(job.parent), str(dest)))
    return copy


def test_killed_run_resumes_to_the_same_weights(
    straight: Path, killed: Path, tmp_path: Path
) -> None:
    job = _copy_job(killed, tmp_path / "resume")
    proc = run_trainer(job, nproc=2)
    assert proc.returncode == 0, explain(proc)
    run = job.parent / "runs" / "run"
    resumes = records(run, "resume")
    assert [r["step"] for r in resumes] == [2]

    diff = max_abs_diff(
        trained_weights(straight / "checkpoint_000006"), trained_weights(run / "checkpoint_000006")
    )
    print(f"\nmax abs diff of the trainable weights, straight vs killed+resumed: {diff:.3g}")
    assert diff <= 1e-6
    # Same LR schedule and losses on every step, the recomputed step 3 included.
    want = {r["step"]: (r["loss"], r["lr"]) for r in records(straight)}
    got = {r["step"]: (r["loss"], r["lr"]) for r in records(run)}
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step][1] == want[step][1]
        assert got[step][0] == pytest.approx(want[step][0], rel=1e-6)


def test_resume_on_one_rank_keeps_global_batch_and_steps(
    straight: Path, killed: Path, tmp_path: Path
) -> None:
    job = _copy_job(killed, tmp_path / "one-rank")
    proc = run_trainer(job, nproc=1)
    assert proc.returncode == 0, explain(proc)
    run = job.parent / "runs" / "run"
    (resume,) = records(run, "resume")
    # 8 = micro 2 x accumulation 2 x world 2 before; now micro 2 x accumulation 4 x world 1.
    assert (resume["step"], resume["world_size"], resume["grad_accum_steps"]) == (2, 1, 4)
    state = json.loads((run / "checkpoint_000006" / "trainer_state.json").read_text())
    assert state["global_batch_size"] == 8
    assert (state["world_size"], state["micro_batch_size"], state["grad_accum_steps"]) == (1, 2, 4)
    assert state["step"] == STEPS and state["samples_consumed"] == STEPS * 8
    steps = [r["step"] for r in records(run)]
    assert steps == list(range(1, STEPS + 1))
    # The first step after the resume sees the same samples as in the 2-rank run.
    tokens = {r["step"]: r["target_tokens"] for r in records(straight)}
    assert all(r["target_tokens"] == tokens[r["step"]] for r in records(run))
