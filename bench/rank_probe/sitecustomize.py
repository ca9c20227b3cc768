"""What math threads each training rank really runs with (benchmarks only).

`bench.ray_overhead` puts this folder first on PYTHONPATH and sets `VLAUNCH_BENCH_PROBE` to
a folder: every Python process started in that environment (torchrun's ranks, Ray's workers,
Ray's own helpers) imports this module at start-up, as `sitecustomize`. A daemon thread
waits until the process has joined a torch.distributed process group, i.e. became a training
rank, and writes `rank-<RANK>-<pid>.json` there: torch's intra-op and inter-op threads, the
OMP / MKL variables, the CPU affinity. It polls twice a second and touches nothing else;
processes that never become a rank write nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _joined_group() -> bool:
    dist = sys.modules.get("torch.distributed")
    try:
        return dist is not None and bool(dist.is_available() and dist.is_initialized())
    except Exception:  # the module is still being imported by the main thread
        return False


def _record(folder: str) -> None:
    deadline = time.monotonic() + 3600
    while not _joined_group():
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)
    import torch

    rank = int(torch.distributed.get_rank())
    info = {
        "rank": rank,
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
    }
    path = os.path.join(folder, f"rank-{rank}-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)


if os.environ.get("VLAUNCH_BENCH_PROBE"):
    threading.Thread(target=_record, args=(os.environ["VLAUNCH_BENCH_PROBE"],), daemon=True).start()
