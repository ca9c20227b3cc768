"""The few hostile cases that need Ray itself: the driver SIGKILLed while its workers train on
a cluster that outlives it (workers went on ~2 s and wrote a checkpoint Ray never registered,
which readers then took as the latest; status.json stayed "running"; killed workers left
full-size temporary copies). Waits are on files and processes, never on time."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

from tests.e2e.helpers import ray_head, vlaunch, vlaunch_background
from tests.hostile.helpers import cli
from tests.trainer.helpers import explain, records, wait_for_step, write_job
from trainer.commit import inspect
from trainer.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900, func_only=True)]


def _train_workers(head_pid: int) -> list[psutil.Process]:
    """The Ray Train worker processes of the cluster started by `head_pid`."""
    found = []
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()) or "RayTrainWorker" in proc.name():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_driver_killed_mid_run(tmp_path: Path, shapes_data: Path) -> None:
    steps = 20  # the kill comes at step 3 or 4; every step also commits a checkpoint
    job = write_job(
        tmp_path,
        shapes_data,
        name="orphan",
        train={"max_steps": steps, "checkpoint_every": 1, "keep_last": 3,
               "global_batch_size": 4, "micro_batch_size": 2},
        resources={"profile": "cpu", "gpus_per_node": 2},
        output={"dir": str(tmp_path / "runs"), "export": "none"},
    )  # fmt: skip
    run = tmp_path / "runs" / "orphan"
    home = {"HOME": str(tmp_path)}
    with ray_head(2, tmp_path, tmp_path) as address:
        head = next(p for p in psutil.Process().children() if "start" in " ".join(p.cmdline()))
        driver = vlaunch_background(
            "run", str(job), "--ray-address", address, "--wait-for-workers", "120",
            cwd=tmp_path, **home,
        )  # fmt: skip
        try:
            wait_for_step(run, 3, driver, timeout=400)
            workers = _train_workers(head.pid)
            assert workers, "no Ray Train workers found"
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=60)
            _gone, alive = psutil.wait_procs(workers, timeout=120)  # Ray reaps the job's actors
            assert not alive, alive
        finally:
            if driver.poll() is None:
                driver.kill()
            driver.communicate()

        # Every checkpoint readers take is complete; a folder written after the driver died
        # (never registered) is not taken.
        rundir = RunDir(run)
        complete = rundir.checkpoints()
        assert complete, list(run.iterdir())
        for folder in complete:
            assert inspect(folder, hashes=True).ok
        last = int(complete[-1].name.split("_")[1])

        # The run is not taken for a running one: a worker recorded the failure when the
        # controller went away, or else status.json's owner (the driver) is seen to be gone.
        status = cli("status", "--json", f"local:{run}")
        assert status.code == 0, status
        reported = json.loads(status.out)
        print("\nstatus after the driver's SIGKILL:", json.dumps(reported)[:600])
        assert reported["state"] == "FAILED", reported
        assert reported["backend_state"] in ("failed", "running (owner gone)"), reported

        again = vlaunch("run", str(job), "--ray-address", address, cwd=tmp_path, **home)
    assert again.returncode == 0, explain(again)
    assert [r["step"] for r in records(run, "resume")] == [last]
    assert [r["step"] for r in records(run)][-1] == steps
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert not list(run.glob(".checkpoint_*.tmp"))
    assert all(inspect(f).ok for f in RunDir(run).checkpoint_folders())
