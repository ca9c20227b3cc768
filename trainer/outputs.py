"""The one guard for every folder vlaunch replaces or deletes outside a run's own files.

`vlaunch export RUN --merge OUT --force` once deleted every run under OUT (OUT = the runs'
parent) and replaced a run with its merged model (OUT = the run). Every export now goes
through `check_export_target` before anything is written and `replace_export` to put the
result in place:

- OUT may not be a run directory or a checkpoint, lie inside one, or hold one (any depth);
- OUT may not be, hold or lie inside what is being exported;
- an existing non-empty OUT is replaced only with `--force`, and only when it is an earlier
  vlaunch export: every export carries `vlaunch_export.json` (transformers and PEFT ignore
  it); a folder without it is never replaced, whatever flag is given;
- temporary folders get fresh names next to OUT (`mkdtemp`), so no folder that happens to
  have the temporary name is ever removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from trainer.commit import MANIFEST, TRAINER_STATE, checkpoint_step
from vlaunch_core.errors import UserError

EXPORT_MARK = "vlaunch_export.json"
"""Written into every export: what `--force` may replace."""
MAX_EXPORT_ENTRIES = 10_000
"""An export holds tens of files; a folder with more is not one (and is not walked further)."""

#: Files of a run directory (trainer/rundir.py) besides its spec.
_RUN_FILES = ("status.json", "metrics.jsonl", "plan.json", "checkpoint_manager_snapshot.json")


def is_run(path: Path) -> bool:
    """A run directory: its spec and any of the files a run writes, or a checkpoint."""
    if not (path / "spec.yaml").is_file():
        return False
    if any((path / name).exists() for name in _RUN_FILES):
        return True
    return any(checkpoint_step(child) is not None for child in _children(path))


def is_checkpoint(path: Path) -> bool:
    return checkpoint_step(path) is not None or any(
        (path / name).is_file() for name in (TRAINER_STATE, MANIFEST)
    )


def _children(path: Path) -> Iterable[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def enclosing_run(path: Path) -> Path | None:
    """`path` itself or the nearest folder above it that is a run or a checkpoint."""
    for folder in (path, *path.parents):
        if folder.is_dir() and (is_run(folder) or is_checkpoint(folder)):
            return folder
    return None


def _run_below(path: Path) -> Path | None:
    """A run or checkpoint anywhere under `path` (bounded walk), or `path` if too big to
    tell (a folder of that size is not an export either)."""
    seen = 0
    for root, dirs, _files in os.walk(path):
        here = Path(root)
        if here != path and (is_run(here) or is_checkpoint(here)):
            return here
        seen += len(dirs) + len(_files)
        if seen > MAX_EXPORT_ENTRIES:
            return path
    return None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_export_target(out: Path, *, force: bool, sources: Iterable[Path] = ()) -> Path:
    """Where an export may go: `out` (absolute, symlinks resolved), or a user error saying why
    not. Reads only."""
    out = Path(out).expanduser().absolute()
    real = out.resolve()
    if real.exists() and not real.is_dir():
        raise UserError(f"{out} is a file", hint="give a folder path for the export")
    for source in sources:
        src = Path(source).expanduser().absolute().resolve()
        if _overlaps(real, src):
            raise UserError(
                f"{out}: the export would overwrite what it is exported from ({src})",
                hint="give a folder outside it",
            )
    run = enclosing_run(real)
    if run is not None:
        what = "a checkpoint" if is_checkpoint(run) else "a run directory"
        where = "is" if run == real else "lies inside"
        raise UserError(
            f"{out} {where} {what} ({run}): an export never goes there",
            hint="give a folder outside every run directory, e.g. exports/<name>",
        )
    if real.is_dir() and any(_children(real)):
        below = _run_below(real)
        if below is not None:
            raise UserError(
                f"{out} holds run directories or checkpoints ({below}): it is never replaced",
                hint="give a new or empty folder for the export",
            )
        if not force:
            raise UserError(
                f"{out} exists and is not empty",
                hint="choose a new folder, or pass --force to replace an earlier export there",
            )
        if not (real / EXPORT_MARK).is_file():
            raise UserError(
                f"{out} exists and is not a vlaunch export (no {EXPORT_MARK}): --force only "
                "replaces an earlier export, nothing else",
                hint="choose a new or empty folder",
            )
    return out


def staging_dir(out: Path) -> Path:
    """A new empty folder next to `out` to build an export in (a fresh name: nothing that
    already exists is ever reused or removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def mark_export(folder: Path, kind: str, source: Path | str | None) -> None:
    (folder / EXPORT_MARK).write_text(
        json.dumps(
            {
                "written_by": "vlaunch export",
                "kind": kind,
                "source": str(source) if source is not None else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )


def replace_export(src: Path, dst: Path) -> None:
    """Move a finished export (`src`, marked) into place; an existing `dst` must itself be a
    marked export (checked again here, not only by the caller)."""
    if not (src / EXPORT_MARK).is_file():
        raise AssertionError(f"{src}: an export is marked before it is put in place")
    if dst.is_symlink() or (dst.exists() and not (dst / EXPORT_MARK).is_file()):
        if dst.is_dir() and not any(_children(dst)):
            dst.rmdir()  # an empty folder
        else:
            raise UserError(f"{dst}: not an earlier vlaunch export: it is never replaced")
    if not dst.exists():
        src.rename(dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    old.rmdir()  # a fresh name to rename the old export to
    dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
