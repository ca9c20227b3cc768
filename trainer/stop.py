"""Graceful stop: checkpoint at the next step boundary, then exit with 75 (EX_TEMPFAIL).

A stop is requested by a signal to a training process (SIGTERM on preemption, SIGUSR1 from
Slurm before the time limit, Ctrl-C) or by the `STOP` file in the run directory, which the
drivers (`vlaunch local`, `vlaunch run`) write when *they* get the signal. Rank 0 looks for
the file; every rank adds its own flag to the per-step all-reduce, so all ranks see the
request at the same step and save the same checkpoint. It works the same under Ray,
torchrun and Slurm.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from trainer.rundir import RunDir

logger = logging.getLogger(__name__)

EXIT_STOPPED = 75
"""sysexits.h EX_TEMPFAIL: interrupted on purpose after a resumable checkpoint was saved."""

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopRequest:
    """This process's view of a stop request."""

    def __init__(self, run_dir: RunDir, rank: int) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM / SIGUSR1 / SIGINT into a stop request (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return  # Ray runs the loop in a thread: its driver writes the STOP file instead
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.reason = f"received {name}"
        logger.warning("%s: saving a checkpoint at the next step boundary, then stopping", name)

    def local_flag(self) -> float:
        """1.0 if this rank wants to stop (rank 0 also reads the STOP file)."""
        if self.reason is None and self.rank == 0 and self.run_dir.stop_file.exists():
            text = self.run_dir.stop_file.read_text(errors="replace").strip()
            self.reason = f"stop requested ({text or 'STOP file'})"
        return 1.0 if self.reason is not None else 0.0
