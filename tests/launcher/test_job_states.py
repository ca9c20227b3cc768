"""Job states: every backend's own words map to one `JobState`, and the word is kept beside it.

Slurm's words are squeue's/sacct's; Kubernetes' come from the Job's conditions and the driver
pod's phase, or the RayJob's status; a local run's from its `status.json` (written here by
the trainer's own `RunDir`). The real Slurm cluster and the Kubernetes client path check the
same through their backends (tests/slurm, tests/k8s/test_client.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher.jobs import JobState, JobStatus
from launcher.k8s.control import job_state, rayjob_state
from launcher.local import LocalBackend
from launcher.slurm import control as slurm
from tests.k8s.helpers import run_cli
from trainer.rundir import RunDir

#: Every job state Slurm documents (squeue(1) "JOB STATE CODES").
SLURM_WORDS = (
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED",
    "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD",
    "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "SIGNALING",
    "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT",
)  # fmt: skip


def test_every_slurm_state_is_mapped() -> None:
    assert sorted(slurm.SLURM_STATES) == sorted(SLURM_WORDS)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("COMPLETED", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
        ("TIMEOUT", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 0", JobState.CANCELLED),  # sacct's form
        ("PREEMPTED", JobState.PREEMPTED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
        ("", JobState.UNKNOWN),
    ],
)
def test_slurm_states(word: str, state: JobState) -> None:
    assert slurm.job_state(word) is state


def _job(*conditions: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": c, "status": "True"} for c in conditions]}}


def _pod(phase: str, index: int = 0, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-completion-index": str(index)}
    return {
        "metadata": {"name": f"p{index}", "labels": labels, "creationTimestamp": created},
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        (_job(), [], (JobState.PENDING, "NoDriverPod")),
        (_job(), [_pod("Pending")], (JobState.PENDING, "Pending")),
        (_job(), [_pod("Running", index=1)], (JobState.PENDING, "NoDriverPod")),
        (_job(), [_pod("Running")], (JobState.RUNNING, "Running")),
        (  # the driver pod was replaced: the newest one counts
            _job(),
            [_pod("Failed"), _pod("Running", created="2026-01-01T00:05:00Z")],
            (JobState.RUNNING, "Running"),
        ),
        (_job("Complete"), [_pod("Succeeded")], (JobState.SUCCEEDED, "Complete")),
        (_job("Failed"), [], (JobState.FAILED, "Failed")),
        (_job("FailureTarget"), [_pod("Running")], (JobState.FAILED, "FailureTarget")),
        (_job("Suspended"), [], (JobState.PENDING, "Suspended")),
    ],
)
def test_kubernetes_job_states(
    job: dict[str, Any], pods: list[dict[str, Any]], expected: tuple[JobState, str]
) -> None:
    assert job_state(job, pods) == expected


@pytest.mark.parametrize(
    ("deployment", "job_status", "expected"),
    [
        ("", "", (JobState.PENDING, "New")),
        ("Initializing", "", (JobState.PENDING, "Initializing")),
        ("Running", "PENDING", (JobState.RUNNING, "Running/PENDING")),
        ("Retrying", "", (JobState.RUNNING, "Retrying")),
        ("Complete", "SUCCEEDED", (JobState.SUCCEEDED, "Complete/SUCCEEDED")),
        ("Complete", "FAILED", (JobState.FAILED, "Complete/FAILED")),
        ("Complete", "STOPPED", (JobState.CANCELLED, "Complete/STOPPED")),
        ("Failed", "", (JobState.FAILED, "Failed")),
        ("ValidationFailed", "", (JobState.FAILED, "ValidationFailed")),
    ],
)
def test_kuberay_states(deployment: str, job_status: str, expected: tuple[JobState, str]) -> None:
    rayjob = {"status": {"jobDeploymentStatus": deployment, "jobStatus": job_status}}
    assert rayjob_state(rayjob) == expected


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("running", JobState.RUNNING),
        ("finished", JobState.SUCCEEDED),
        ("failed", JobState.FAILED),
        ("stopped", JobState.CANCELLED),
    ],
)
def test_local_states(tmp_path: Path, word: str, state: JobState) -> None:
    RunDir(tmp_path / "run").write_status(word, step=3)  # type: ignore[arg-type]
    status = LocalBackend().describe(f"local:{tmp_path / 'run'}")
    assert (status.backend, status.state, status.backend_state) == ("local", state, word)
    assert status.job_id == f"local:{tmp_path / 'run'}" and status.detail["step"] == 3


def test_local_cancel_asks_the_run_to_stop(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.write_status("running", step=1)
    status = LocalBackend().cancel(f"local:{run.path}")
    assert run.stop_file.read_text() == "vlaunch cancel\n"  # what the loop checks every step
    assert status.state is JobState.RUNNING and status.detail["stop_requested"] == "vlaunch cancel"
    run.write_status("finished", step=2)
    run.clear_stop()
    assert LocalBackend().cancel(f"local:{run.path}").state is JobState.SUCCEEDED
    assert not run.stop_file.exists()  # nothing to stop any more


def test_status_json_carries_both_words(tmp_path: Path) -> None:
    RunDir(tmp_path / "run").write_status("stopped", step=5, checkpoint="checkpoint_000005")
    code, out, err = run_cli(["status", f"local:{tmp_path / 'run'}", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert (data["backend"], data["state"], data["backend_state"]) == (
        "local",
        "CANCELLED",
        "stopped",
    )
    assert data["detail"]["checkpoint"] == "checkpoint_000005"
    code, out, _ = run_cli(["status", f"local:{tmp_path / 'run'}"])
    assert out.splitlines()[0] == f"local:{tmp_path / 'run'}  CANCELLED (stopped)"


def test_the_state_set_is_small_and_shared() -> None:
    assert [s.value for s in JobState] == [
        "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "PREEMPTED", "UNKNOWN",
    ]  # fmt: skip
    assert {s for s in JobState if s.is_terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.PREEMPTED,
    }
    status = JobStatus("slurm", "slurm:1", JobState.PENDING, "REQUEUED")
    assert status.headline() == "slurm:1  PENDING (REQUEUED)"
