"""CPU time of every process of a `vlaunch local` run while it trains: the ranks, and Ray's own
processes beside them (GCS, raylet, log monitor, agents, Ray Train's controller and actors).

`python -m bench.ray_processes` runs the `ray_overhead` job (2 CPU ranks, one math thread
each) for `--steps` steps and reads the CPU time of every process whose command line names
Ray or vlaunch (psutil) twice: when `metrics.jsonl` first records step `--from`, and again at
step `--to`. What Ray's processes use in that window is taken from the two cores the ranks
keep busy (docs/benchmarks.md, "Ray overhead").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.common import REPO, bench_env
from bench.jobs import BENCH_ROOT
from bench.ray_overhead import RANKS, THREADS_PER_RANK, commands, write_job

RANK = "RayTrainWorker (rank)"
"""The role of a rank's process."""


def role(cmdline: str) -> str | None:
    """What a process of the run is, from its command line (None: not the run's)."""
    if cmdline.startswith("ray::"):
        name = (cmdline[5:].split(maxsplit=1) or [""])[0]
        return RANK if name.startswith("RayTrainWorker") else name.removesuffix(".run")
    for marker, name in (
        ("gcs_server", "GCS"),
        ("raylet/raylet", "raylet"),
        ("log_monitor.py", "log monitor"),
        ("monitor.py", "autoscaler monitor"),
        ("dashboard/agent.py", "dashboard agent"),
        ("runtime_env/agent", "runtime env agent"),
        ("vlaunch local", "driver (vlaunch local)"),
    ):
        if marker in cmdline:
            return name
    if "/ray/" in cmdline:
        return "other Ray process"
    return None


def snapshot() -> dict[int, tuple[str, float]]:
    """(role, user + system CPU seconds) of every process of a run now on this machine, by
    pid (psutil; a process it may not read, or one that ended, is left out)."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        name = role(" ".join(proc.info["cmdline"] or []).strip())
        if name is not None and times is not None:
            out[proc.pid] = (name, times.user + times.system)
    return out


def window(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process started in between counts
    from zero; one that ended in between is not seen)."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        used[name] = used.get(name, 0.0) + max(0.0, seconds - start)
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def last_step(metrics: Path) -> int:
    from trainer.metrics import read_metrics

    steps = [r["step"] for r in read_metrics(metrics) if isinstance(r.get("step"), int)]
    return max(steps, default=0)


def wait_for(done: Callable[[], bool], proc: subprocess.Popen[Any], what: str) -> None:
    """Poll `done` every 20 ms until it holds; the run ending first is an error."""
    while not done():
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.02)


def run(
    *, steps: int = 45, start: int = 6, stop: int = 36, root: Path = BENCH_ROOT, **job: Any
) -> dict[str, Any]:
    """CPU seconds per process role of one `vlaunch local` run, steps `start` to `stop`."""
    if not 0 < start < stop <= steps:
        raise ValueError(f"need 0 < start < stop <= steps, got {start}, {stop}, {steps}")
    work = root / "ray_processes"
    spec_path, run_dir = write_job(work, steps=steps, root=root, **job)
    shutil.rmtree(run_dir, ignore_errors=True)  # a new run (not a resume of the last one)
    metrics = run_dir / "metrics.jsonl"
    proc = subprocess.Popen(
        commands(spec_path)["ray"],
        cwd=REPO,
        env=bench_env(threads=THREADS_PER_RANK),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: last_step(metrics) >= start, proc, f"step {start}")
        t0, before = time.monotonic(), snapshot()
        wait_for(lambda: last_step(metrics) >= stop, proc, f"step {stop}")
        seconds, after = time.monotonic() - t0, snapshot()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(run_dir, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"vlaunch local failed ({proc.returncode}): {err[-2000:]}")
    used = window(before, after)
    ranks = used.get(RANK, 0.0)
    ray = sum(v for k, v in used.items() if k != RANK)
    cores = os.cpu_count() or 1
    return {
        "name": "ray_processes",
        "steps": [start, stop],
        "window_s": round(seconds, 3),
        "step_s": round(seconds / (stop - start), 4),
        "cpu_s": {k: round(v, 3) for k, v in used.items()},
        "ranks_cpu_s": round(ranks, 3),
        "others_cpu_s": round(ray, 3),
        "others_share_of_cores": round(ray / (seconds * cores), 4),
        "cores": cores,
        "ranks": RANKS,
        "command": f"python -m bench.ray_processes --steps {steps} --from {start} --to {stop}",
    }


def render(result: dict[str, Any]) -> Iterable[str]:
    start, stop = result["steps"]
    yield (
        f"steps {start}-{stop}: {result['window_s']:.2f} s ({result['step_s']:.3f} s a step); "
        f"ranks {result['ranks_cpu_s']:.2f} CPU-s; the other processes "
        f"{result['others_cpu_s']:.2f} CPU-s = {100 * result['others_share_of_cores']:.1f}% "
        f"of {result['cores']} cores"
    )
    for name, seconds in result["cpu_s"].items():
        yield f"  {seconds:6.2f}  {name}"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--from", dest="start", type=int, default=6)
    parser.add_argument("--to", dest="stop", type=int, default=36)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = run(steps=args.steps, start=args.start, stop=args.stop)
    print(json.dumps(result, indent=2) if args.json else "\n".join(render(result)))


if __name__ == "__main__":
    main()
