"""CPU time per process of a `vlaunch local` run (bench/ray_processes.py): how processes are
named and counted, and one real run on a local Ray cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ray_processes
from bench.ray_processes import RANK, role, snapshot, window


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("ray::RayTrainWorker.run_train_fn", RANK),
        ("ray::TrainController.run", "TrainController"),
        ("ray::SynchronizationActor", "SynchronizationActor"),
        ("/v/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --x=1", "GCS"),
        ("/v/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --y", "raylet"),
        (
            "/v/bin/python -u /v/lib/python3.11/site-packages/ray/_private/log_monitor.py",
            "log monitor",
        ),
        ("/v/bin/python /v/bin/vlaunch local job.yaml --workers 2", "driver (vlaunch local)"),
        ("/v/bin/python -m something.else", None),
        ("/usr/sbin/sshd -D", None),
    ],
)
def test_each_process_gets_its_role(cmdline: str, expected: str | None) -> None:
    assert role(cmdline) == expected


def test_a_snapshot_holds_the_runs_processes_and_their_cpu_time() -> None:
    # a real process whose command line starts as a Ray actor's does, burning CPU
    code = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print(1, flush=True)\n"
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        ["bash", "-c", f'exec -a "ray::FakeActor" {sys.executable} -c "$0"', code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"
        snap = snapshot()
    finally:
        proc.communicate(b"")
    name, seconds = snap[proc.pid]
    assert name == "FakeActor" and seconds >= 0.3
    assert os.getpid() not in snap  # this test's own process is no part of a run


def test_the_window_counts_what_each_role_used_in_between() -> None:
    before = {1: ("raylet", 2.0), 2: (RANK, 10.0), 3: (RANK, 11.0), 9: ("GCS", 1.0)}
    after = {1: ("raylet", 2.5), 2: (RANK, 14.0), 3: (RANK, 15.5), 4: ("new actor", 0.25)}
    used = window(before, after)
    assert used == {RANK: 8.5, "raylet": 0.5, "new actor": 0.25}  # pid 9 ended: not seen
    assert list(used) == [RANK, "raylet", "new actor"]  # most first


def test_a_window_outside_the_run_is_refused() -> None:
    with pytest.raises(ValueError, match="start < stop"):
        ray_processes.run(steps=10, start=8, stop=4)


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_run_shows_the_ranks_and_rays_processes(bench_root: Path) -> None:
    small = {"hidden": 64, "layers": 2, "global_batch_size": 4, "micro_batch_size": 2}
    result = ray_processes.run(steps=8, start=3, stop=7, root=bench_root, **small)
    # a second run starts anew: its window is its own steps, not the first run's file
    again = ray_processes.run(steps=8, start=3, stop=7, root=bench_root, **small)
    assert again["ranks_cpu_s"] > 0 and again["window_s"] > 0
    used = result["cpu_s"]
    assert used[RANK] > 0 and result["ranks_cpu_s"] == pytest.approx(used[RANK], abs=1e-3)
    assert "TrainController" in used and "raylet" in used
    # `vlaunch local` starts none of the helper actors trainer/ray_trainer.py leaves out
    assert not {"PlacementGroupCleaner", "DatasetManager", "_AutoscalingCoordinatorActor"} & set(
        used
    )
    # a window this short may hold no CPU tick of Ray's processes (10 ms each): not asserted
    others = sum(v for k, v in used.items() if k != RANK)
    assert result["others_cpu_s"] == pytest.approx(others, abs=1e-2)
    assert 0 <= result["others_share_of_cores"] < 1
    assert "\n".join(ray_processes.render(result)).count("\n") == len(used)
