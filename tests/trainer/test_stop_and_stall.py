"""A graceful stop (SIGTERM: checkpoint at the next step, exit 75) and a stalled rank (the
collective timeout names it)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.trainer.helpers import (
    PYTHON,
    child_env,
    explain,
    records,
    run_trainer,
    wait_for_step,
    write_job,
)


def test_sigterm_checkpoints_at_the_next_step_and_exits_75(
    tmp_path: Path, shapes_data: Path
) -> None:
    steps = 400  # far more than it runs before the signal lands
    job = write_job(
        tmp_path,
        shapes_data,
        name="stop",
        train={"max_steps": steps, "checkpoint_every": 1000},
        resources={"gpus_per_node": 1},
    )
    run = tmp_path / "runs" / "stop"
    proc = subprocess.Popen(
        [PYTHON, "-m", "trainer.run", str(job), "--quiet"],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_step(run, 2, proc, timeout=240)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, out[-4000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and "SIGTERM" in status["reason"]
    stopped = status["step"]
    assert 2 <= stopped < steps
    state = json.loads((run / f"checkpoint_{stopped:06d}" / "trainer_state.json").read_text())
    assert state["stopped"] is True and state["step"] == stopped
    assert max(r["step"] for r in records(run)) == stopped  # no step after the checkpoint
    assert not (run / "adapter").exists()  # a stop is not the end: no final export


def test_stalled_rank_is_named_when_the_collective_times_out(
    tmp_path: Path, shapes_data: Path
) -> None:
    job = write_job(
        tmp_path,
        shapes_data,
        name="stall",
        train={"timeout_minutes": 0.1, "checkpoint_every": 1000},
    )
    proc = run_trainer(job, nproc=2, timeout=240, VLAUNCH_FAULT="stall:1:2")
    assert proc.returncode != 0, explain(proc)
    text = proc.stdout + proc.stderr
    assert "CollectiveTimeout" in text, explain(proc)
    assert "rank 1 (host" in text and "last started step 2" in text, explain(proc)
    status = json.loads((tmp_path / "runs" / "stall" / "status.json").read_text())
    assert status["state"] == "failed" and "rank 1" in status["error"]
