"""Helpers shared by the benchmarks: paths, the subprocess environment, timing, medians, and a
description of the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
"""The virtual environment's scripts: python, vlaunch, torchrun."""


def thread_env(threads: int) -> dict[str, str]:
    """The variables that fix a process's math threads (torch reads them at start-up)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def bench_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """Environment of every benchmark subprocess: offline, no Ray telemetry, quiet tokenizers,
    no colours; with `threads`, that many math threads per process (`thread_env`)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "NO_COLOR": "1",
        **(thread_env(threads) if threads is not None else {}),
        **extra,
    }


def proc_status_bytes(key: str) -> int:
    """A memory line of this process's /proc/self/status (`VmRSS`, `VmHWM`, ...), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """`summarize` of the wall times of `repeats` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summarize(samples)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def run_cli(argv: Sequence[str], *, cwd: Path = REPO) -> None:
    """Run `vlaunch ARGV` to its end; RuntimeError with its stderr when it fails."""
    proc = subprocess.run(
        [str(BIN / "vlaunch"), *argv],
        cwd=cwd,
        env=bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"vlaunch {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
