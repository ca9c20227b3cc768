"""How the pods of an operator-free run end together (launcher/k8s/rendezvous.py and the
chart's files/entrypoint.sh), on real loopback sockets and a real bash.

The `ray` and `vlaunch` commands are replaced by small recorders: the real `ray stop` kills
every Ray process of the user on this machine (other engineers' test clusters included), and
the real `vlaunch run` needs the trainer and a Ray cluster. What is under test is the exit
code each pod ends with, and that Ray is started and stopped, in the right order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.k8s.rendezvous import (
    EXIT_FINISHED,
    EXIT_NO_HEAD,
    EXIT_RESUMABLE,
    announce,
    announced,
    worker,
)
from tests.conftest import REPO

ENTRYPOINT = REPO / "charts" / "finetune-job" / "files" / "entrypoint.sh"
RECORDER = """#!/usr/bin/env bash
# Records its arguments; `vlaunch run` exits with $FAKE_DRIVER_EXIT (75 on SIGTERM).
echo "$(basename "$0") $*" >> "$FAKE_CALLS"
if [[ "$(basename "$0")" == vlaunch ]]; then
  trap 'echo "vlaunch got TERM" >> "$FAKE_CALLS"; exit 75' TERM
  if [[ -n "${FAKE_DRIVER_WAIT:-}" ]]; then
    touch "$FAKE_DRIVER_WAIT"
    while true; do sleep 0.05; done
  fi
  exit "${FAKE_DRIVER_EXIT:-0}"
fi
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeGcs:
    """Stands in for the head's Ray port: accepts connections until closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def gcs() -> Iterator[FakeGcs]:
    g = FakeGcs()
    yield g
    g.close()


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ray", "vlaunch"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def record(tmp_path: Path) -> tuple[list[str], Path]:
    """A `ray` command line for `worker()` that appends its arguments to a file."""
    log = tmp_path / "ray.calls"
    cmd = [
        sys.executable,
        "-c",
        "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')",
        str(log),
    ]
    return cmd, log


def test_worker_exits_0_once_the_head_announces(gcs: FakeGcs, tmp_path: Path) -> None:
    ray, log = record(tmp_path)
    done_port = free_port()
    head = threading.Thread(
        target=announce, args=(done_port,), kwargs={"expect": 1, "seconds": 30, "host": "127.0.0.1"}
    )
    head.start()
    rc = worker(
        "127.0.0.1",
        ray_port=gcs.port,
        done_port=done_port,
        wait=10,
        ray_args=["--num-gpus=8"],
        ray=ray,
        poll=0.05,
        lost_after=30,
    )
    head.join(timeout=30)
    assert rc == EXIT_FINISHED
    assert calls(log) == [f"start --address=127.0.0.1:{gcs.port} --num-gpus=8", "stop"]


def test_worker_exits_75_when_the_head_vanishes_without_announcing(
    gcs: FakeGcs, tmp_path: Path
) -> None:
    ray, log = record(tmp_path)
    result: list[int] = []

    def run() -> None:
        result.append(
            worker(
                "127.0.0.1",
                ray_port=gcs.port,
                done_port=free_port(),
                wait=10,
                ray=ray,
                poll=0.05,
                lost_after=0.3,
            )
        )

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not calls(log) and time.monotonic() < deadline:  # until it joined (`ray start`)
        assert t.is_alive(), result
    gcs.close()  # the head pod is gone
    t.join(timeout=30)
    assert result == [EXIT_RESUMABLE]
    assert calls(log)[-1] == "stop --force"


def test_worker_gives_up_when_the_head_never_comes(tmp_path: Path) -> None:
    ray, log = record(tmp_path)
    rc = worker(
        "127.0.0.1", ray_port=free_port(), done_port=free_port(), wait=0.3, ray=ray, poll=0.05
    )
    assert rc == EXIT_NO_HEAD and calls(log) == []


def test_worker_stops_on_sigterm_as_resumable(gcs: FakeGcs, tmp_path: Path) -> None:
    ray, log = record(tmp_path)
    stop = threading.Event()
    stop.set()  # SIGTERM arrived
    rc = worker(
        "127.0.0.1",
        ray_port=gcs.port,
        done_port=free_port(),
        wait=10,
        ray=ray,
        poll=0.05,
        stop=stop,
    )
    assert rc == EXIT_RESUMABLE and calls(log)[-1] == "stop --force"


def test_announce_answers_each_worker_then_returns() -> None:
    port = free_port()
    head = threading.Thread(
        target=announce, args=(port,), kwargs={"expect": 2, "seconds": 30, "host": "127.0.0.1"}
    )
    head.start()
    answers: list[bool] = []
    deadline = time.monotonic() + 30
    while len(answers) < 2 and time.monotonic() < deadline:
        if announced("127.0.0.1", port):  # refused until the head listens
            answers.append(True)
    assert len(answers) == 2
    head.join(timeout=30)
    assert not head.is_alive()
    assert not announced("127.0.0.1", port)  # closed once every worker heard it


# ---------------------------------------------------------------------- files/entrypoint.sh


def run_entrypoint(fake_bin: Path, tmp_path: Path, index: int, **env: str) -> subprocess.Popen[str]:
    base = {
        "PATH": f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "FAKE_CALLS": str(tmp_path / "calls"),
        "JOB_COMPLETION_INDEX": str(index),
        "POD_IP": "127.0.0.1",
        "VLAUNCH_HEAD_HOST": "127.0.0.1",
        "VLAUNCH_GPUS_PER_NODE": "8",
        "VLAUNCH_NODES": "1",
        "VLAUNCH_OUTPUT_DIR": "/workspace/runs",
        "VLAUNCH_HEAD_WAIT_SECONDS": "5",
        "VLAUNCH_DONE_PORT": str(free_port()),
        "RAY_AUTH_MODE": "token",  # what the chart sets, the token from the run's Secret
        "RAY_AUTH_TOKEN": "test-token",
    }
    return subprocess.Popen(
        ["bash", str(ENTRYPOINT)],
        env={**base, **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("driver_exit", [0, 2, 75])
def test_head_pod_exits_with_the_drivers_code(
    fake_bin: Path, tmp_path: Path, driver_exit: int
) -> None:
    proc = run_entrypoint(fake_bin, tmp_path, 0, FAKE_DRIVER_EXIT=str(driver_exit))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == driver_exit, out
    log = calls(tmp_path / "calls")
    assert log[0].startswith(
        "ray start --head --port=6379 --node-ip-address=127.0.0.1 --num-gpus=8"
    )
    # No plan from a launch (a plain `helm install`): the driver plans for this Job's pods.
    assert log[1] == (
        "vlaunch run /etc/vlaunch/job.yaml --ray-address 127.0.0.1:6379 resources.nodes=1 "
        "resources.gpus_per_node=8 output.dir=/workspace/runs"
    )
    assert log[-1] == "ray stop --force"


def test_head_pod_passes_the_launchs_plan(fake_bin: Path, tmp_path: Path) -> None:
    proc = run_entrypoint(fake_bin, tmp_path, 0, VLAUNCH_PLAN="/etc/vlaunch/plan.json")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert calls(tmp_path / "calls")[1] == (
        "vlaunch run /etc/vlaunch/job.yaml --ray-address 127.0.0.1:6379 --plan "
        "/etc/vlaunch/plan.json output.dir=/workspace/runs"
    )


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize(
    "auth", [{"RAY_AUTH_MODE": ""}, {"RAY_AUTH_TOKEN": ""}, {"RAY_AUTH_MODE": "disabled"}]
)
def test_pods_refuse_to_start_ray_without_token_auth(
    fake_bin: Path, tmp_path: Path, index: int, auth: dict[str, str]
) -> None:
    proc = run_entrypoint(fake_bin, tmp_path, index, **auth)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out  # FailJob: a retry would be refused the same way
    assert "refusing to start Ray without token authentication" in out
    assert calls(tmp_path / "calls") == []  # neither `ray start` nor the driver ran


def test_head_pod_passes_sigterm_to_the_driver(fake_bin: Path, tmp_path: Path) -> None:
    started = tmp_path / "driver-started"
    proc = run_entrypoint(fake_bin, tmp_path, 0, FAKE_DRIVER_WAIT=str(started))
    deadline = time.monotonic() + 30
    while not started.exists():  # the driver is running once it wrote this file
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out
    assert "vlaunch got TERM" in calls(tmp_path / "calls")


def test_two_pods_end_together(fake_bin: Path, tmp_path: Path, gcs: FakeGcs) -> None:
    """Pod 1 (worker) joins the head's Ray port; pod 0 finishes the run and announces it;
    both exit 0."""
    done = str(free_port())
    worker_pod = run_entrypoint(
        fake_bin, tmp_path, 1, VLAUNCH_RAY_PORT=str(gcs.port), VLAUNCH_DONE_PORT=done
    )
    head_pod = run_entrypoint(fake_bin, tmp_path, 0, VLAUNCH_NODES="2", VLAUNCH_DONE_PORT=done)
    head_out, _ = head_pod.communicate(timeout=60)
    worker_out, _ = worker_pod.communicate(timeout=60)
    assert (head_pod.returncode, worker_pod.returncode) == (0, 0), head_out + worker_out
    assert f"ray start --address=127.0.0.1:{gcs.port} --num-gpus=8" in calls(tmp_path / "calls")
