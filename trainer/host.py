"""Where the loop runs: what it resumes from and where its checkpoints go.

The loop is the same function everywhere; a `Host` is the only thing that differs:

- `LocalHost`: one process or torchrun.
- `trainer.ray_host.RayHost`: inside a Ray Train worker; the checkpoint is also registered
  with Ray's controller (`ray.train.report`) before it is committed.

Both write a checkpoint the same way (`stage` / `commit` below, the protocol of
trainer/commit.py): every rank writes its part into `<run>/.checkpoint_NNNNNN.tmp/`; once
all have, rank 0 computes the manifest (size and SHA-256 of every file), flushes the folder
and renames it to `checkpoint_NNNNNN/`; the manifest is written last (under Ray, after the
controller registered the checkpoint), and only then are the oldest complete checkpoints
beyond `train.keep_last` deleted. A crash or a full disk leaves at most an incomplete folder,
which readers skip and the next start removes; the last complete checkpoint is never touched.
Both resume from `select_resume`: the newest checkpoint that passes the byte-for-byte check.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from trainer import dist
from trainer.commit import build_manifest, fsync_tree, inspect, write_manifest
from trainer.rundir import RunDir, checkpoint_name, checkpoint_step
from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

WriteFn = Callable[[Path], None]

#: Errors of a full or refusing filesystem: a user-facing error, not a bug (and not worth a
#: retry of the worker group).
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


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
        yield resume_point(self.run_dir, self.rank)

    def save(self, step: int, write: WriteFn, metrics: dict[str, Any]) -> None:
        tmp = stage(self.run_dir, step, self.rank, write)
        error: UserError | None = None
        if self.rank == 0:
            try:
                with disk_errors(self.run_dir, tmp):
                    manifest = build_manifest(tmp, step)
                    write_manifest(tmp, manifest)
                    fsync_tree(tmp)
                    publish(self.run_dir, tmp, step)
                    prune(self.run_dir, self.keep_last)
            except UserError as e:
                error = e
        dist.agree(error)


# --------------------------------------------------------------------------- shared steps


def resume_point(run_dir: RunDir, rank: int) -> Path | None:
    """Rank 0 chooses (`select_resume`), every rank gets its choice. Collective."""
    chosen: Path | None = None
    error: UserError | None = None
    if rank == 0:
        try:
            chosen = select_resume(run_dir)
        except UserError as e:
            error = e
    result = dist.broadcast_object((chosen, None if error is None else (error.message, error.hint)))
    path, failure = result
    if failure is not None:
        raise UserError(failure[0], hint=failure[1])
    return path


def select_resume(run_dir: RunDir) -> Path | None:
    """The newest complete checkpoint, every byte checked (None: start fresh). Reads only.

    Incomplete folders (never committed) and damaged ones (committed, then changed) are
    skipped with a warning naming the reason and the file. When the run has committed
    checkpoints and none passes the check, the run is refused rather than started over."""
    skipped = []
    chosen: Path | None = None
    for folder in reversed(run_dir.checkpoint_folders()):
        found = inspect(folder, hashes=True)
        if found.ok:
            chosen = folder
            break
        skipped.append(found)
    damaged = [s for s in skipped if s.verdict == "damaged"]
    if chosen is None and damaged:
        raise UserError(
            f"run '{run_dir.path.name}' cannot resume: none of its checkpoints is intact; "
            + "; ".join(s.note() for s in damaged),
            hint=f"restore the files, or move the damaged checkpoints out of {run_dir.path} "
            "to start the run over",
        )
    for s in skipped:
        logger.warning(
            "skipping %s (resuming from %s)", s.note(), chosen.name if chosen else "the start"
        )
    return chosen


def tidy_for_resume(run_dir: RunDir, chosen: Path | None) -> None:
    """Once the resume is decided and accepted (rank 0): remove incomplete checkpoint folders
    and temporary folders, and move damaged checkpoints newer than `chosen` aside (a new
    save will want their name; they are kept for inspection)."""
    newest = checkpoint_step(chosen) if chosen is not None else None
    for folder in run_dir.checkpoint_folders():
        step = checkpoint_step(folder) or 0
        newer = newest is None or step > newest
        found = inspect(folder, hashes=newer)
        if found.verdict == "incomplete":
            shutil.rmtree(folder, ignore_errors=True)
        elif found.verdict == "damaged" and newer:
            folder.rename(_aside(folder))
    for stale in run_dir.path.glob(".checkpoint_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _aside(folder: Path) -> Path:
    for i in range(1000):
        candidate = folder.with_name(f"{folder.name}.damaged" + (f".{i}" if i else ""))
        if not candidate.exists():
            return candidate
    raise UserError(f"{folder}: too many damaged copies next to it", hint="clean up the run")


def stage(run_dir: RunDir, step: int, rank: int, write: WriteFn) -> Path:
    """Every rank writes its part into the checkpoint's temporary folder. Collective."""
    tmp = run_dir.path / f".{checkpoint_name(step)}.tmp"
    error: UserError | None = None
    if rank == 0:
        try:
            with disk_errors(run_dir, tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
        except UserError as e:
            error = e
    dist.agree(error)
    try:
        with disk_errors(run_dir, tmp):
            write(tmp)
    except UserError as e:
        error = e
    dist.agree(error)  # every rank stops here together when one could not write
    return tmp


def publish(run_dir: RunDir, tmp: Path, step: int) -> Path:
    """Rename a fully written temporary folder to its checkpoint name (rank 0)."""
    final = run_dir.checkpoint_dir(step)
    if final.exists():  # left by an attempt that died after renaming it: not committed
        found = inspect(final)
        if found.verdict == "damaged":
            final.rename(_aside(final))
        else:
            shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune(run_dir: RunDir, keep_last: int) -> None:
    """Delete the oldest complete checkpoints beyond `keep_last`, and leftovers (rank 0)."""
    complete = run_dir.checkpoints()
    for old in complete[: max(0, len(complete) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)
    newest = checkpoint_step(complete[-1]) if complete else None
    for folder in run_dir.checkpoint_folders():
        step = checkpoint_step(folder)
        older = newest is not None and step is not None and step < newest
        if older and inspect(folder).verdict == "incomplete":
            shutil.rmtree(folder, ignore_errors=True)
    for stale in run_dir.path.glob(".checkpoint_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


FULL_BYTES = 1 << 20
"""A filesystem with less free space than this after a failed write is taken as full (torch's
zip writer reports a full disk as `RuntimeError: ... unexpected pos`, not as ENOSPC)."""


def disk_full(path: Path) -> bool:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free < FULL_BYTES
            except OSError:
                return False
    return False


def disk_problem(run_dir: RunDir, error: BaseException) -> UserError | None:
    """A failure caused by the run directory's disk (full, read-only, no permission), as one
    user error naming the path; None for any other failure. Temporary folders of the run are
    removed first (which frees the space status.json needs)."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        reason, where = error.strerror or str(error), error.filename or run_dir.path
    elif disk_full(run_dir.path):
        reason, where = os.strerror(errno.ENOSPC), run_dir.path
    else:
        return None
    remove_partials(run_dir)
    last = run_dir.latest_checkpoint()
    return UserError(
        f"cannot write the run's files: {reason}: {where}",
        hint="free space (or fix the permissions) there and run the same command again: "
        + (f"it resumes from {last.name}" if last else "no checkpoint was saved yet"),
    )


def remove_partials(run_dir: RunDir) -> None:
    """Remove what an interrupted write of the run left: temporary checkpoint and export
    folders and temporary JSON files (only vlaunch's own names, inside the run)."""
    for pattern in (".checkpoint_*.tmp", ".export.tmp", ".*.json.*.tmp", ".*.jsonl.*.tmp"):
        for stale in run_dir.path.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _release(error: BaseException) -> None:
    """Clear the locals of every frame the error (and the errors it chains) went through."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]


@contextlib.contextmanager
def disk_errors(run_dir: RunDir, partial: Path) -> Iterator[None]:
    """A full or read-only disk while writing a checkpoint: remove the partial folder (which
    also frees the space for status.json) and raise one user error naming the path."""
    try:
        yield
        return
    except Exception as e:
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            reason, where = e.strerror or str(e), e.filename or partial
        elif disk_full(partial):
            reason, where = os.strerror(errno.ENOSPC), partial
        else:
            raise
        # The failed write's frames still hold its open files: a removed file keeps its
        # blocks until closed, so status.json would find the disk still full.
        _release(e)
        del e
    gc.collect()
    shutil.rmtree(partial, ignore_errors=True)
    last = run_dir.latest_checkpoint()
    raise UserError(
        f"cannot write the checkpoint {partial.name.strip('.').removesuffix('.tmp')}: "
        f"{reason}: {where}",
        hint="free space (or fix the permissions) there and run the same command again: "
        + (f"it resumes from {last.name}" if last else "no checkpoint was saved yet"),
    )
