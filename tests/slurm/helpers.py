"""Shared pieces of the Slurm tests: job specs, the in-process CLI, golden-file comparison."""

from __future__ import annotations

import copy
import io
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import yaml

from launcher.cli import main

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
PAYLOAD_DIR = HERE / "payload"
REGEN = os.environ.get("VLAUNCH_REGEN_GOLDEN") == "1"

#: A job as a GPU cluster user would write it (paths absolute: the output is the same anywhere).
GPU_JOB: dict[str, Any] = {
    "name": "vila-ft",
    "model": {"name_or_path": "tiny:llava"},
    "data": {"mixture": "shapes", "datasets": {"shapes": {"data_path": "/shared/data/train.json"}}},
    "train": {"global_batch_size": 256, "max_steps": 100},
    "resources": {"profile": "h100-80gb", "nodes": 2},
    "output": {"dir": "/shared/runs"},
    "slurm": {"partition": "gpu", "account": "vlm", "time": "04:00:00"},
}

#: A job for the local test cluster: CPU profile, two "nodes", the stand-in payload's knobs.
CPU_JOB: dict[str, Any] = {
    "name": "slurm-test",
    "model": {"name_or_path": "tiny:llava"},
    "data": {"mixture": "shapes", "datasets": {"shapes": {"data_path": "/tmp/unused.json"}}},
    "train": {"global_batch_size": 4, "max_steps": 10},
    "resources": {"profile": "cpu", "nodes": 2, "gpus_per_node": 1},
    "slurm": {"partition": "debug", "cpus_per_task": 2},
}


def job(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with dotted-key changes (`job(GPU_JOB, **{"slurm.qos": "high"})`)."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def write_job(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    """Run `vlaunch ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def check_golden(name: str, text: str) -> None:
    """Compare with tests/slurm/golden/NAME (VLAUNCH_REGEN_GOLDEN=1 rewrites it)."""
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run `make golden`"
    assert text == path.read_text(), (
        f"{name} differs from the golden file; if the change is intended, run `make golden` "
        "(VLAUNCH_REGEN_GOLDEN=1 pytest tests/slurm -k golden) and review the diff"
    )


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.5) -> Any:
    """Poll `predicate()` until it returns something truthy (a real condition, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def wait_ended(handle: str, timeout: float = 300) -> Any:
    """The final JobStatus of a job (requeued jobs pass through PENDING again)."""
    from launcher.slurm.control import status

    def ended() -> Any:
        st = status(handle)
        return st if st.state.is_terminal else None

    try:
        return wait_for(ended, timeout, f"{handle} to end", poll=1.0)
    except AssertionError as e:
        log = status(handle).detail.get("log", "")
        text = Path(log).read_text() if log and Path(log).is_file() else "(no log)"
        raise AssertionError(f"{e}\n--- job log ---\n{text}") from None


def ray_leftovers(job_id: str) -> list[Path]:
    """Ray temp dirs of a job left in /tmp (the job script removes each node's when it ends
    the job itself: finished, requeued, chained; not guaranteed after scancel or preemption)."""
    return list(Path("/tmp").glob(f"vlaunch-ray-{job_id}-*"))


def fold_weights(steps: int) -> int:
    """The stand-in payload's `weight` after an uninterrupted run of `steps` steps."""
    weight = 1
    for step in range(1, steps + 1):
        weight = (weight * 1_000_003 + step) % (1 << 61)
    return weight
