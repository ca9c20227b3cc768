"""Running the `vlaunch` CLI and a standalone Ray head in tests."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.trainer.helpers import PYTHON, child_env, free_port


def vlaunch(
    *args: str, cwd: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "launcher.cli", *args],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def vlaunch_background(*args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "launcher.cli", *args],
        cwd=cwd,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def ray_head(num_cpus: int, folder: Path, home: Path) -> Iterator[str]:
    """`ray start --head --block` (what the Slurm script and the chart run); yields its address.
    Ended with SIGTERM by pid, which makes `ray start` stop the processes it started. Its
    auth token goes to `home`/.ray (clients must use the same HOME)."""
    port = free_port()
    log = (folder / "ray-head.log").open("w")
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--port={port}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        cwd=folder,
        env=child_env(HOME=str(home), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
