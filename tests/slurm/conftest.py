"""The real local Slurm cluster (tests/slurm/cluster.sh) for the tests marked `slurm`.

`slurm_cluster` (session) starts it, installing Debian's Slurm and munge first when they are
missing (as root, which CI is), or reuses one that is already up; it stops it at the end only
if it started it (VLAUNCH_SLURM_KEEP=1 keeps it). `slurm_env` points this process at it
(SLURM_CONF) and puts the stand-in `vlaunch` payload first on PATH: submitted jobs inherit
this environment, as they do on a real cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.helpers import HERE, PAYLOAD_DIR

CLUSTER_SH = HERE / "cluster.sh"
STATE = Path(os.environ.get("VLAUNCH_SLURM_STATE", "/tmp/vlaunch-slurm"))


def _cluster(command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), command],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """SLURM_CONF of a running local cluster with two nodes."""
    if sys.platform != "linux":
        pytest.skip("the local Slurm cluster needs Linux")
    reused = _cluster("status").returncode == 0
    if not reused:
        began = time.monotonic()
        proc = _cluster("start")
        if proc.returncode != 0:
            pytest.fail(f"tests/slurm/cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
        print(f"\nlocal Slurm cluster started in {time.monotonic() - began:.1f} s", flush=True)
    yield STATE / "slurm.conf"
    if not reused and os.environ.get("VLAUNCH_SLURM_KEEP") != "1":
        _cluster("stop", timeout=120)


@pytest.fixture
def slurm_env(slurm_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process (and the jobs it submits) talk to the local cluster; `vlaunch` on PATH
    in the jobs is the stand-in payload, then this virtualenv."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    venv_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([str(PAYLOAD_DIR), venv_bin, os.environ["PATH"]]))
    return slurm_cluster
