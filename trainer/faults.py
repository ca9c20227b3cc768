"""Fault injection for the resume and failure tests: a real SIGKILL or a real stall.

`VLAUNCH_FAULT=kill:RANK:STEP` kills rank RANK with SIGKILL right after optimizer step STEP
(not a polite stop: nothing is flushed or saved); `stall:RANK:STEP` makes it hang there, to
exercise the collective timeout. A marker file in the run directory makes each fault fire
once, so the restarted run (Ray `FailureConfig`, or a re-run) goes through. Unset in normal
runs; the variable is read once per step (a dictionary lookup).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from trainer.rundir import RunDir

logger = logging.getLogger(__name__)

ENV = "VLAUNCH_FAULT"


def maybe_inject(run_dir: RunDir, rank: int, step: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    kind, want_rank, want_step = spec.split(":")
    if int(want_rank) != rank or int(want_step) != step:
        return
    marker = run_dir.path / f".fault-{kind}-{rank}-{step}"
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    logger.warning("fault injection: %s on rank %d after step %d", kind, rank, step)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "stall":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher can still end it
        threading.Event().wait()
    else:
        raise ValueError(f"{ENV}={spec!r}: unknown fault {kind!r} (kill or stall)")
