"""`vlaunch slurm` against the real local Slurm cluster: the job script's mechanics.

`vlaunch run` inside these jobs is a stand-in (`tests/slurm/payload/vlaunch`) that keeps the
trainer's contract (checkpoint on SIGUSR1/SIGTERM at a step boundary, exit 75, resume) and
records what it saw (Ray nodes, argv, environment), so that the paths the real trainer's
tests (test_trainer_e2e.py: two nodes, status/logs/cancel, SIGUSR1 and `scontrol requeue`
with equal weights) do not take are checked cheaply: chaining with `afterany`,
max_restarts reached, Slurm's own `--signal` before a real time limit, hostile strings end
to end, sbatch's parsing of the header, plain `sbatch slurm/srun_*.sh`, a bad partition.
"""

from __future__ import annotations

import json
import re
import subprocess
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
    ray_leftovers,
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


def _assert_resumed_exactly(run: Run, total: int) -> None:
    assert run.steps() == sorted(run.steps()) and run.steps() == list(range(1, total + 1))
    done = json.loads((run.payload / "done.json").read_text())
    assert done == {"step": total, "weight": fold_weights(total), "tag": done["tag"]}


def test_chain_mode_submits_a_dependent_job(slurm_env: Path, tmp_path: Path) -> None:
    run = Run(tmp_path, job(CPU_JOB, env=_steps_env(30, 0.25)), "--requeue", "chain")
    wait_for(lambda: len(run.steps()) >= 6, 240, "6 steps")
    run_command(["scancel", "--batch", "--signal=USR1", run.job_id]).check_returncode()
    first = wait_ended(run.handle)
    assert first.state == "FAILED" and first.detail["exit_code"] == "75:0"
    match = re.search(r"job (\d+) continues the run \(afterany:(\d+)\)", run.log())
    assert match and match.group(2) == run.job_id
    assert not ray_leftovers(run.job_id)
    second = wait_ended(f"slurm:{match.group(1)}")
    assert second.backend_state == "COMPLETED"
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
    assert not ray_leftovers(run.job_id)
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
    assert final.backend_state == "COMPLETED" and final.detail["restarts"] >= 1
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
    assert final.backend_state == "COMPLETED", run.log()
    (start,) = run.starts()
    assert start["spec"]["name"] == name
    assert start["env"]["VLAUNCH_TEST_EVIL"] == evil
    assert Path(start["argv"][2]).parent == out_dir / name / "slurm"
    # the launch's plan, handed over beside the spec, is what the driver was given
    assert Path(start["plan_path"]).parent == out_dir / name / "slurm"
    assert start["argv"][start["argv"].index("--plan") + 1] == start["plan_path"]
    assert start["plan"]["name"] == name and start["plan"]["world_size"] == 2
    rc, planned, err = cli("plan", str(run.spec), "--json")
    assert rc == 0, err
    assert start["plan"] == json.loads(planned)  # what `vlaunch plan` printed
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
    assert final.backend_state == "COMPLETED", log
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


def test_a_plan_that_does_not_fit_never_reaches_the_cluster(
    slurm_env: Path, tmp_path: Path
) -> None:
    """The fit gate of the launch pipeline (issue 15): a 13B full fine-tune with DDP on 8x
    A100-40GB is refused with `vlaunch plan`'s error, exit 1; no file, no job."""
    before = run_command(["squeue", "-h", "--states=all", "-o", "%i"]).stdout.split()
    data = job(
        CPU_JOB,
        model={"name_or_path": "llava-hf/llava-1.5-13b-hf"},
        tuning={"preset": "fft"},
        train={"global_batch_size": 64, "strategy": "ddp"},
        resources={"profile": "a100-40gb", "nodes": 1, "gpus_per_node": 8},
        **{"output.dir": str(tmp_path / "runs")},
    )
    spec = write_job(tmp_path / "job.yaml", data)
    rc, _, planned = cli("plan", str(spec))
    assert rc == 1 and "does not fit" in planned
    rc, out, err = cli("slurm", str(spec))
    assert (rc, out, err) == (1, "", planned)
    assert not (tmp_path / "runs").exists()
    after = run_command(["squeue", "-h", "--states=all", "-o", "%i"]).stdout.split()
    assert set(after) <= set(before)
