"""What the user watches: a rich progress bar on a terminal, periodic log lines otherwise.

Fed with the same records that go to metrics.jsonl, so it can run in the training process
(one process, torchrun) or in the driver that tails metrics.jsonl (Ray, whose workers have no
terminal).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _si(x: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


class ProgressDisplay:
    """Step, loss, lr, tokens/s, samples/s and ETA; a bar on a TTY, else a line per N steps."""

    def __init__(
        self,
        total_steps: int,
        start_step: int,
        *,
        tty: bool | None = None,
        every_steps: int = 1,
        every_seconds: float = 30.0,
    ) -> None:
        self.total = total_steps
        self.start = start_step
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.every_steps = max(1, every_steps)
        self.every_seconds = every_seconds
        self._t0 = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]step"),
                MofNCompleteColumn(),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[info]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task(
                "train", total=total_steps, completed=start_step, info=""
            )
            self._bar.start()

    def eta(self, step: int) -> float | None:
        done = step - self.start
        if done <= 0:
            return None
        return (time.monotonic() - self._t0) / done * (self.total - step)

    def update(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        info = (
            f"loss {record.get('loss', float('nan')):.4f}  lr {record.get('lr', 0.0):.1e}  "
            f"{_si(record.get('tokens_per_s', 0.0))} tok/s  "
            f"{record.get('samples_per_s', 0.0):.3g} samples/s"
        )
        if "peak_mem_gib" in record:
            info += f"  peak {record['peak_mem_gib']:.1f} GiB"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.monotonic()
        last = step >= self.total
        if not last and step % self.every_steps and now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        eta = self.eta(step)
        logger.info(
            "step %d/%d  %s  ETA %s",
            step,
            self.total,
            info,
            fmt_duration(eta) if eta is not None else "?",
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class Steps:
    """Progress of countable work outside training (evaluating, checking data): a bar with
    the ETA on a terminal (stderr), else a log line when it starts, one every
    `every_seconds` with the ETA, and one when it ends. Use as a context manager."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "",
        tty: bool | None = None,
        every_seconds: float = 30.0,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every_seconds = every_seconds
        self.done = 0
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Steps:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(self.what),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task(self.what, total=self.total)
            self._bar.start()
        else:
            size = f" ({self.total} {self.unit})".replace(" )", ")") if self.total else ""
            logger.info("%s%s ...", self.what, size)
        return self

    def update(self, done: int, total: int | None = None) -> None:
        """`done` of `total` (which may become known only now)."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
            return
        now = time.monotonic()
        if now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        eta = self.eta()
        logger.info(
            "%s: %d/%s %s, ETA %s",
            self.what,
            done,
            self.total if self.total is not None else "?",
            self.unit,
            fmt_duration(eta) if eta is not None else "?",
        )

    def eta(self) -> float | None:
        if not self.done or not self.total:
            return None
        return (time.monotonic() - self._t0) / self.done * (self.total - self.done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc[0] is None:
            logger.info("%s: done in %s", self.what, fmt_duration(time.monotonic() - self._t0))


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Work without a count (loading a model, writing files): a line when it starts and one
    with its duration when it ends (on a terminal, the libraries' own bars show inside)."""
    t0 = time.monotonic()
    logger.info("%s ...", what)
    yield
    logger.info("%s: done in %s", what, fmt_duration(time.monotonic() - t0))
