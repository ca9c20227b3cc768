"""`vlaunch slurm` against the real local Slurm cluster (tests/slurm/cluster.sh).

PHASE 1: the trainer is not there yet, so `vlaunch run` inside the jobs is the STAND-IN
payload `tests/slurm/payload/vlaunch` (it keeps the trainer's contract: checkpoint on
SIGUSR1/SIGTERM at a step boundary, exit 75, resume). These tests check the job script's
mechanics (Ray across two Slurm nodes, status/logs/cancel, requeue and chaining, quoting),
not training: the end-to-end run of the real trainer on two nodes, with weights equal to an
uninterrupted run after a preemption, is phase 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.slurm.control import status
from launcher.slurm.render import sbatch_quote
from launcher.slurm.submit import run_command
from tests.conftest import REPO
from tests.slurm.helpers import (
    CPU_JOB,
    cli,
    fold_weights,
    job,
    wait_ended,
    wait_for,
    write_job,
)

pytestmark = pytest.mark.slurm


class Run:
    """A submitted test job and what its stand-in payload recorded."""

    def __init__(self, tmp_path: Path, data: dict[str, Any], *flags: str) -> None:
        if "output" not in data:
            data = job(data, **{"output.dir": str(tmp_path / "runs")})
        self.data = data
        self.spec = write_job(tmp_path / "job.yaml", self.data)
        rc, out, err = cli("slurm", str(self.spec), *flags)
        assert rc == 0, err
        self.handle = out.strip().splitlines()[-1]
        assert re.fullmatch(r"slurm:\d+", self.handle), out
        self.job_id = self.handle.split(":")[1]
        self.run_dir = Path(self.data["output"]["dir"]) / self.data["name"]
        self.payload = self.run_dir / "payload"

    def steps(self) -> list[int]:
        path = self.payload / "steps.log"
        return (
            [int(line.split()[0]) for line in path.read_text().splitlines()]
            if path.exists()
            else []
        )

    def starts(self) -> list[dict[str, Any]]:
        files = sorted(self.payload.glob("start-*.json"), key=lambda p: p.stat().st_mtime)
        return [json.loads(p.read_text()) for p in files]

    def log(self) -> str:
        return Path(status(self.handle).detail["log"]).read_text()


def _steps_env(steps: int, seconds: float, every: int = 5) -> dict[str, str]:
    return {
        "VLAUNCH_TEST_STEPS": str(steps),
        "VLAUNCH_TEST_STEP_SECONDS": str(seconds),
        "VLAUNCH_TEST_CHECKPOINT_EVERY": str(every),
    }


def _follow(handle: str) -> str:
    """`vlaunch logs --follow` in a subprocess: returns when the job has ended."""
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "logs", "--follow", handle],
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _assert_no_ray_leftovers(run: Run) -> None:
    """Each node's Ray temp dir is removed when the job script ends the job (finished,
    requeued or chained by itself; not guaranteed after scancel or preemption)."""
    assert not list(Path("/tmp").glob(f"vlaunch-ray-{run.job_id}-*")), "Ray temp dirs left"


def _assert_resumed_exactly(run: Run, total: int) -> None:
    assert run.steps() == sorted(run.steps()) and run.steps() == list(range(1, total + 1))
    done = json.loads((run.payload / "done.json").read_text())
    assert done == {"step": total, "weight": fold_weights(total), "tag": done["tag"]}


def test_two_node_ray_cluster_forms_and_logs_follow(slurm_env: Path, tmp_path: Path) -> None:
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(3, 0.1)))
    followed = _follow(run.handle)  # streams while it runs, returns when the job ends
    final = status(run.handle)
    assert final.state == "COMPLETED"
    assert final.detail["exit_code"] == "0:0" and final.detail["restarts"] == 0
    assert final.detail["nodes"] == "2" and final.detail["nodelist"] == "node[1-2]"

    (start,) = run.starts()
    nodes = sorted(start["ray_nodes"], key=lambda n: n["slurm_node"])
    assert nodes == [
        {"slurm_node": "node1", "ip": "127.0.0.11"},
        {"slurm_node": "node2", "ip": "127.0.0.12"},
    ]
    log_dir = run.run_dir / "slurm"
    spec_path = log_dir / "slurm-test.job.yaml"
    assert start["argv"][1:4] == ["run", str(spec_path), "--ray-address"]
    assert re.fullmatch(r"127\.0\.0\.11:\d+", start["argv"][4])
    assert start["spec"]["resources"]["nodes"] == 2
    assert start["spec"]["output"]["dir"] == str(tmp_path / "runs")

    log_file = log_dir / f"slurm-test-{run.job_id}.out"
    assert final.detail["log"] == str(log_file)
    text = log_file.read_text()
    assert "2 of 2 nodes alive" in text and "the trainer finished" in text
    assert followed == text
    rc, out, _ = cli("logs", run.handle)
    assert rc == 0 and out == text
    _assert_no_ray_leftovers(run)


def test_status_and_cancel_a_running_job(slurm_env: Path, tmp_path: Path) -> None:
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(100_000, 0.2)))
    wait_for(run.steps, 240, "the payload to take steps")
    rc, out, _ = cli("status", run.job_id, "--json")  # a bare id means Slurm
    assert rc == 0
    running = json.loads(out)
    assert running["job_id"] == run.handle and running["state"] == "RUNNING"
    assert running["detail"]["nodelist"] == "node[1-2]"

    rc, out, err = cli("cancel", run.handle)
    assert rc == 0, err
    final = wait_ended(run.handle, timeout=120)
    assert final.state == "CANCELLED"
    assert not (run.payload / "done.json").exists()


def test_usr1_before_the_time_limit_requeues_and_resumes(slurm_env: Path, tmp_path: Path) -> None:
    """What `--signal=B:USR1@N` delivers, sent now (`scancel --batch --signal=USR1`)."""
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(40, 0.25)))
    wait_for(lambda: len(run.steps()) >= 8, 240, "8 steps")
    run_command(["scancel", "--batch", "--signal=USR1", run.job_id]).check_returncode()
    final = wait_ended(run.handle)
    assert final.state == "COMPLETED" and final.detail["restarts"] == 1
    first, second = run.starts()
    assert first["env"].get("SLURM_JOB_ID") == second["env"].get("SLURM_JOB_ID") == run.job_id
    _assert_resumed_exactly(run, 40)
    log = run.log()
    assert "received SIGUSR1" in log and "payload: SIGUSR1 -> checkpoint" in log
    assert f"requeueing job {run.job_id} (restart 1 of at most 3)" in log
    _assert_no_ray_leftovers(run)
    assert re.search(r"resuming from step ([1-9]\d*)", log.split("restart 1 (max 3)")[1])


def test_scontrol_requeue_mid_run_comes_back_and_resumes(slurm_env: Path, tmp_path: Path) -> None:
    """Preemption-style: Slurm requeues the job (SIGTERM to it), the script must not requeue
    it a second time."""
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(40, 0.25)))
    wait_for(lambda: len(run.steps()) >= 8, 240, "8 steps")
    run_command(["scontrol", "requeue", run.job_id]).check_returncode()
    final = wait_ended(run.handle)
    assert final.state == "COMPLETED" and final.detail["restarts"] == 1
    _assert_resumed_exactly(run, 40)
    log = run.log()
    assert "received SIGTERM" in log and "Slurm decides whether the job comes back" in log
    assert "requeueing job" not in log


def test_chain_mode_submits_a_dependent_job(slurm_env: Path, tmp_path: Path) -> None:
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(30, 0.25)), "--requeue", "chain")
    wait_for(lambda: len(run.steps()) >= 6, 240, "6 steps")
    run_command(["scancel", "--batch", "--signal=USR1", run.job_id]).check_returncode()
    first = wait_ended(run.handle)
    assert first.state == "FAILED" and first.detail["exit_code"] == "75:0"
    match = re.search(r"job (\d+) continues the run \(afterany:(\d+)\)", run.log())
    assert match and match.group(2) == run.job_id
    _assert_no_ray_leftovers(run)
    second = wait_ended(f"slurm:{match.group(1)}")
    assert second.state == "COMPLETED"
    starts = run.starts()
    assert [s["env"].get("VLAUNCH_CHAIN_INDEX") for s in starts] == [None, "1"]
    _assert_resumed_exactly(run, 30)


def test_max_restarts_reached_stops_with_a_checkpoint(slurm_env: Path, tmp_path: Path) -> None:
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(1000, 0.25)), "--max-restarts", "0")
    wait_for(lambda: len(run.steps()) >= 3, 240, "3 steps")
    run_command(["scancel", "--batch", "--signal=USR1", run.job_id]).check_returncode()
    final = wait_ended(run.handle)
    assert final.state == "FAILED" and final.detail["exit_code"] == "75:0"
    assert final.detail["restarts"] == 0
    assert "slurm.max_restarts=0: not coming back" in run.log()
    _assert_no_ray_leftovers(run)
    checkpoint = json.loads((run.payload / "checkpoint.json").read_text())
    assert checkpoint["step"] == len(run.steps()) and not (run.payload / "done.json").exists()


@pytest.mark.slow
def test_time_limit_signal_checkpoints_and_requeues(slurm_env: Path, tmp_path: Path) -> None:
    """The real thing: Slurm itself sends SIGUSR1 60 s before a 3-minute limit. slurmctld
    checks every 30 s and may signal up to 60 s early, so it lands 90-120 s in: the first run
    cannot finish its ~110 s of steps, the second can."""
    run = Run(
        tmp_path, job(CPU_JOB, env=_steps_env(440, 0.25)), "--time", "3", "--signal-seconds", "60"
    )
    final = wait_ended(run.handle, timeout=900)
    assert final.state == "COMPLETED" and final.detail["restarts"] >= 1
    _assert_resumed_exactly(run, 440)
    assert "received SIGUSR1" in run.log()


def test_hostile_strings_reach_the_job_exactly(
    slurm_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the job's working directory: where `touch pwned` would land
    name = "x$(touch pwned)'\"; touch pwned2 #`touch pwned3`"
    out_dir = tmp_path / "runs $(touch pwned) 'q' \"dq\" 100%"
    evil = "$(touch pwned)`touch pwned2`'\"\\ ;|& done"
    data = job(
        CPU_JOB,
        name=name,
        env={**_steps_env(2, 0.1), "VLAUNCH_TEST_EVIL": evil},
        **{"output.dir": str(out_dir)},
    )
    run = Run(tmp_path, data)
    final = wait_ended(run.handle)
    assert final.state == "COMPLETED", run.log()
    (start,) = run.starts()
    assert start["spec"]["name"] == name
    assert start["env"]["VLAUNCH_TEST_EVIL"] == evil
    assert Path(start["argv"][2]).parent == out_dir / name / "slurm"
    assert Path(final.detail["log"]).parent == out_dir / name / "slurm"
    assert not [p for p in tmp_path.rglob("pwned*")], "a user string ran as a command"


def test_sbatch_reads_header_values_exactly(slurm_env: Path, tmp_path: Path) -> None:
    """`sbatch_quote` against the real sbatch parser (held jobs, cancelled right away)."""
    for value in ("plain", "a b", "x$(id)'\"", "back\\slash", "hash#tag", "tr\\\"icky' \\\\"):
        out_dir = tmp_path / value.replace("/", "_")
        out_dir.mkdir()
        output = str(out_dir).replace("%", "%%") + "/%j.out"
        script = (
            f"#!/bin/bash\n#SBATCH --job-name={sbatch_quote(value)}\n"
            f"#SBATCH --comment={sbatch_quote(value)}\n"
            f"#SBATCH --output={sbatch_quote(output)}\n#SBATCH --hold\ntrue\n"
        )
        proc = subprocess.run(
            ["sbatch", "--parsable"], input=script, capture_output=True, text=True, check=True
        )
        jid = proc.stdout.strip()
        try:
            got = run_command(["squeue", "-h", "-j", jid, "-o", "%j\x1f%k"]).stdout
            assert got.rstrip("\n") == f"{value}\x1f{value}"
            assert status(jid).detail["log"] == f"{out_dir}/{jid}.out"
        finally:
            run_command(["scancel", jid])


def test_plain_sbatch_entrypoint(slurm_env: Path, tmp_path: Path) -> None:
    """`sbatch [options] slurm/srun_*.sh JOB.yaml` for users who prefer plain sbatch."""
    data = job(CPU_JOB, env=_steps_env(3, 0.1), **{"output.dir": str(tmp_path / "runs")})
    data["resources"]["nodes"] = 1  # the allocation decides: sbatch -N 2 below
    spec = write_job(tmp_path / "job.yaml", data)
    entry = REPO / "slurm" / "srun_lora_vt_llm_grouped.sh"
    proc = run_command(
        [
            "sbatch",
            "--parsable",
            "--nodes=2",
            "--cpus-per-task=2",
            "--partition=debug",
            f"--output={tmp_path}/%x-%j.out",
            str(entry),
            str(spec),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    jid = proc.stdout.strip()
    final = wait_ended(jid)
    log = (tmp_path / f"srun_lora_vt_llm_grouped-{jid}.out").read_text()
    assert final.state == "COMPLETED", log
    (start,) = (
        json.loads(p.read_text())
        for p in (tmp_path / "runs" / "slurm-test" / "payload").glob("start-*.json")
    )
    assert start["spec"]["tuning"]["preset"] == "lora_vt_llm"
    assert start["spec"]["data"]["group_by_length"] is True
    assert start["spec"]["resources"]["nodes"] == 2
    assert len(start["ray_nodes"]) == 2


def test_bad_partition_fails_before_anything_reaches_the_cluster(
    slurm_env: Path, tmp_path: Path
) -> None:
    before = run_command(["squeue", "-h", "--states=all", "-o", "%i"]).stdout.split()
    data = job(CPU_JOB, **{"output.dir": str(tmp_path / "runs")})
    spec = write_job(tmp_path / "job.yaml", data)
    rc, _, err = cli("slurm", str(spec), "--partition", "debgu")
    assert rc == 2
    assert "no partition 'debgu'" in err and "Did you mean 'debug'?" in err
    assert not (tmp_path / "runs").exists()
    after = run_command(["squeue", "-h", "--states=all", "-o", "%i"]).stdout.split()
    assert set(after) <= set(before)
