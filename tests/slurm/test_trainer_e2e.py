"""The real trainer through `vlaunch slurm` on the local two-node cluster (issue 6).

`vlaunch run` inside the jobs is the real one (this virtualenv first on PATH). One
uninterrupted run of the tiny job (`baseline`, built once per module) is the reference: it
trains across both Slurm nodes with Ray, and `status` and `logs --follow` are checked
against it while it runs. Each interrupted run (SIGUSR1 as `--signal` delivers it before a
time limit; `scontrol requeue` as a preemption does) must come back by itself and end with
adapter weights equal (`torch.equal`) to that same baseline.

Kept small for the 2-core CI machine: 16 synthetic images, 8 steps of 4 samples, no
held-out evaluation, a checkpoint every 2 steps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.slurm.control import status
from launcher.slurm.submit import run_command
from tests.conftest import REPO
from tests.slurm.helpers import cli, ray_leftovers, wait_ended, wait_for, write_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS = 8
CHECKPOINT_EVERY = 2


@pytest.fixture(scope="module")
def trainer_env(slurm_cluster: Path) -> Iterator[Path]:
    """This process and its jobs use the local cluster; jobs find the real `vlaunch`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(slurm_cluster))
        venv_bin = str(Path(sys.executable).parent)
        mp.setenv("PATH", os.pathsep.join([venv_bin, os.environ["PATH"]]))
        yield slurm_cluster


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """16 synthetic shapes images and a registry naming them (and the tiny LLaVA the jobs
    train, built here rather than by both nodes at once)."""
    root = tmp_path_factory.mktemp("shapes")
    rc, _, err = cli(
        "data", "synth", str(root / "data"), "--train", "16", "--eval", "0",
        "--video-train", "0", "--video-eval", "0",
    )  # fmt: skip
    assert rc == 0, err
    registry = {"shapes_train": {"data_path": "data/train.json", "media_dir": "data"}}
    (root / "registry.yaml").write_text(yaml.safe_dump(registry))
    return root / "registry.yaml"


@dataclass
class TrainerJob:
    """A submitted run of the tiny job (examples/demo.yaml, shrunk) on two Slurm nodes."""

    handle: str
    run_dir: Path

    @classmethod
    def submit(cls, root: Path, registry: Path, name: str, *overrides: str) -> TrainerJob:
        data: dict[str, Any] = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
        data["name"] = name
        data["data"]["registry"] = [str(registry)]
        del data["data"]["eval_mixture"]
        data["train"].update(
            max_steps=STEPS, checkpoint_every=CHECKPOINT_EVERY, global_batch_size=4
        )
        data["resources"].update(profile="cpu", gpus_per_node=1)
        data["output"] = {"dir": str(root / "runs")}
        data["slurm"] = {"partition": "debug", "cpus_per_task": 2}
        spec = write_job(root / f"{name}.yaml", data)
        rc, out, err = cli("slurm", str(spec), "--nodes", "2", *overrides)
        assert rc == 0, err
        handle = out.strip().splitlines()[-1]
        assert re.fullmatch(r"slurm:\d+", handle), out
        return cls(handle, root / "runs" / name)

    @property
    def job_id(self) -> str:
        return self.handle.split(":")[1]

    def metrics(self, kind: str) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if r.get("kind") == kind]

    def last_step(self) -> int:
        return max((r["step"] for r in self.metrics("train")), default=0)

    def adapter(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.run_dir / "adapter" / "adapter_model.safetensors"))

    def wait_ended(self) -> Any:
        return wait_ended(self.handle, timeout=600)

    def log(self) -> str:
        """The job's log exactly (progress bars' carriage returns kept, as `logs` prints)."""
        return Path(status(self.handle).detail["log"]).read_bytes().decode()


def _train_worker_nodes(job_id: str) -> set[str]:
    """The Slurm node (SLURMD_NODENAME) of each Ray Train worker process of the job now.

    All "nodes" are this host, so /proc shows them; each worker inherits the environment
    of the `ray start` that Slurm ran on its node."""
    nodes = set()
    for proc in Path("/proc").iterdir():
        try:
            if b"RayTrainWorker" not in (proc / "cmdline").read_bytes():
                continue
            env = dict(
                item.split(b"=", 1)
                for item in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except OSError:  # not a process, or it ended meanwhile
            continue
        if env.get(b"SLURM_JOB_ID") == job_id.encode():
            nodes.add(env.get(b"SLURMD_NODENAME", b"?").decode())
    return nodes


@dataclass
class Baseline:
    job: TrainerJob
    running: dict[str, Any]
    """`vlaunch status --json` while the job ran."""
    worker_nodes: set[str]
    followed: str
    """What `vlaunch logs --follow` printed; it returned when the job ended."""
    final: Any


@pytest.fixture(scope="module")
def baseline(
    trainer_env: Path, registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Baseline:
    """The uninterrupted run, watched with `status` and `logs --follow` while it trains."""
    job = TrainerJob.submit(tmp_path_factory.mktemp("baseline"), registry, "e2e")
    follow = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "logs", "--follow", job.handle],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # bytes: text mode would turn carriage returns into newlines
    )
    try:
        wait_for(job.last_step, 600, "the first training step")
        rc, out, _ = cli("status", job.job_id, "--json")  # a bare id means Slurm
        assert rc == 0
        running = json.loads(out)
        # Both workers exist from before the first step until after the last one.
        nodes = _train_worker_nodes(job.job_id)
        final = job.wait_ended()
        streamed, err = follow.communicate(timeout=120)
        assert follow.returncode == 0, err.decode()
        followed = streamed.decode()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    return Baseline(job, running, nodes, followed, final)


def test_tiny_model_trains_across_two_slurm_nodes(baseline: Baseline) -> None:
    job, final = baseline.job, baseline.final
    log = job.log()
    assert final.backend_state == "COMPLETED", log
    assert final.detail["exit_code"] == "0:0" and final.detail["restarts"] == 0
    assert final.detail["nodes"] == "2" and final.detail["nodelist"] == "node[1-2]"
    assert final.detail["log"] == str(job.run_dir / "slurm" / f"e2e-{job.job_id}.out")

    # Each Slurm node is its own Ray node (its own address), and one rank trained on each.
    assert "2 node(s) node1=127.0.0.11 node2=127.0.0.12" in log
    assert re.search(r"Ray cluster at 127\.0\.0\.11:\d+: 2 of 2 nodes alive", log)
    assert baseline.worker_nodes == {"node1", "node2"}
    assert [r["step"] for r in job.metrics("train")] == list(range(1, STEPS + 1))
    assert "the trainer finished" in log
    assert job.adapter(), "the adapter holds no tensors"
    assert json.loads((job.run_dir / "status.json").read_text())["state"] == "finished"
    assert not ray_leftovers(job.job_id)

    running = baseline.running
    assert running["job_id"] == job.handle and running["state"] == "RUNNING"
    assert running["detail"]["nodelist"] == "node[1-2]"
    assert baseline.followed == log  # streamed while it ran, complete when the job ended
    rc, out, _ = cli("logs", job.handle)
    assert rc == 0 and out == log


def test_cancel_a_training_job(trainer_env: Path, registry: Path, tmp_path: Path) -> None:
    job = TrainerJob.submit(tmp_path, registry, "e2e-cancel", "train.max_steps=100000")
    wait_for(lambda: status(job.handle).state == "RUNNING", 300, "the job to run")
    rc, _, err = cli("cancel", job.handle)
    assert rc == 0, err
    final = job.wait_ended()
    assert final.state == "CANCELLED"
    rc, out, _ = cli("status", job.handle)
    assert rc == 0 and "CANCELLED" in out
    assert not (job.run_dir / "adapter").exists()


def _assert_resumed_to_baseline(job: TrainerJob, baseline: Baseline) -> int:
    """The run came back once, resumed from a checkpoint and ended with the baseline's
    weights; returns the step it resumed from."""
    final = job.wait_ended()
    assert final.backend_state == "COMPLETED", job.log()
    assert final.detail["restarts"] == 1, (
        "the job did not come back exactly once; if it finished before the interruption "
        f"reached it, raise STEPS\n{job.log()}"
    )
    (resume,) = job.metrics("resume")
    steps = [r["step"] for r in job.metrics("train")]
    assert 1 <= resume["step"] < STEPS
    # Every step once, in order, the steps after the checkpoint again after the resume.
    assert steps[-(STEPS - resume["step"]) :] == list(range(resume["step"] + 1, STEPS + 1))
    assert sorted(set(steps)) == list(range(1, STEPS + 1))

    import torch

    expected, got = baseline.job.adapter(), job.adapter()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    return int(resume["step"])


def test_usr1_before_the_time_limit_checkpoints_requeues_and_resumes_exactly(
    trainer_env: Path, registry: Path, tmp_path: Path, baseline: Baseline
) -> None:
    """What `--signal=B:USR1@N` delivers before a time limit, sent now: the driver saves a
    checkpoint at the next step boundary, exits 75, and the script requeues the job."""
    job = TrainerJob.submit(tmp_path, registry, "e2e-usr1")
    wait_for(job.last_step, 600, "the first training step")
    run_command(["scancel", "--batch", "--signal=USR1", job.job_id]).check_returncode()
    resumed_from = _assert_resumed_to_baseline(job, baseline)
    log = job.log()
    assert "received SIGUSR1" in log
    assert f"requeueing job {job.job_id} (restart 1 of at most 3)" in log
    # It checkpointed where the signal stopped it: no step is done twice.
    assert f"stopped at step {resumed_from}/{STEPS}" in log
    assert not ray_leftovers(job.job_id)


def test_scontrol_requeue_mid_run_comes_back_and_resumes_exactly(
    trainer_env: Path, registry: Path, tmp_path: Path, baseline: Baseline
) -> None:
    """Preemption-style: Slurm requeues the job (SIGTERM to every process of it); the run
    resumes from its last periodic checkpoint and the script does not requeue it again."""
    job = TrainerJob.submit(tmp_path, registry, "e2e-requeue")
    # A step after a checkpoint starts only once that checkpoint is committed.
    wait_for(lambda: job.last_step() > CHECKPOINT_EVERY, 600, "a committed checkpoint")
    run_command(["scontrol", "requeue", job.job_id]).check_returncode()
    resumed_from = _assert_resumed_to_baseline(job, baseline)
    assert resumed_from >= CHECKPOINT_EVERY
    log = job.log()
    assert "received SIGTERM" in log and "Slurm decides whether the job comes back" in log
    assert "requeueing job" not in log
