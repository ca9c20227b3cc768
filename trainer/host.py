"""Where the loop runs: what it resumes from and where its checkpoints go.

The loop is the same function everywhere; a `Host` is the only thing that differs:

- `LocalHost`: one process or torchrun. Checkpoints are written into a temporary folder of
  the run directory and renamed into place once complete (a crash never leaves a half
  checkpoint under a real name), and the oldest beyond `train.keep_last` are deleted.
- `trainer.ray_host.RayHost`: inside a Ray Train worker. Each rank writes its part into a
  local temporary folder and hands it to `ray.train.report`, which merges the ranks' parts
  into `<storage>/<name>/checkpoint_NNNNNN/`, registers it only once every rank has
  uploaded, and keeps the last `CheckpointConfig(num_to_keep)`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from trainer import dist
from trainer.rundir import RunDir, checkpoint_name

logger = logging.getLogger(__name__)

WriteFn = Callable[[Path], None]


class Host(Protocol):
    name: str

    def resume_from(self) -> contextlib.AbstractContextManager[Path | None]:
        """The checkpoint folder to resume from (None: start fresh), while it is needed."""
        ...

    def save(self, step: int, write: WriteFn, metrics: dict[str, Any]) -> None:
        """Collective: every rank calls `write(folder)` for its part, then it is committed."""
        ...


class LocalHost:
    """Checkpoints straight into the run directory (one process, or torchrun)."""

    name = "local"

    def __init__(self, run_dir: RunDir, keep_last: int, rank: int) -> None:
        self.run_dir = run_dir
        self.keep_last = keep_last
        self.rank = rank

    @contextlib.contextmanager
    def resume_from(self) -> Iterator[Path | None]:
        latest = self.run_dir.latest_checkpoint() if self.rank == 0 else None
        yield dist.broadcast_object(latest)

    def save(self, step: int, write: WriteFn, metrics: dict[str, Any]) -> None:
        final = self.run_dir.checkpoint_dir(step)
        tmp = self.run_dir.path / f".{checkpoint_name(step)}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        write(tmp)
        dist.barrier()
        if self.rank == 0:
            _fsync_tree(tmp)
            if final.exists():  # left by an attempt that died after renaming it
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        dist.barrier()

    def _prune(self) -> None:
        complete = self.run_dir.checkpoints()
        for old in complete[: max(0, len(complete) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.run_dir.path.glob(".checkpoint_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush a checkpoint's files before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
