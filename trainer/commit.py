"""The checkpoint commit protocol: what makes a checkpoint folder complete, and how readers
check it.

A checkpoint is complete when its manifest, `vlaunch_checkpoint.json`, is there and agrees
with the folder: it lists every file the ranks wrote with its size and SHA-256, and it is
written last, only once every rank's part is on disk (and, under Ray, once Ray's controller
has registered the checkpoint). Anything else is not a checkpoint:

- *incomplete*: no manifest (the writer died, the disk filled up, Ray never registered it):
  skipped with a note, and removed when the run resumes;
- *damaged*: a manifest, but a listed file is missing, has another size or other bytes, or
  the folder holds a file the manifest does not list (a truncated `optimizer.pt`, garbage in
  `trainer_state.json`, a planted file): skipped with a warning naming the file, and kept
  for inspection (renamed aside when a new checkpoint needs its name).

Every reader (resume, `infer`, `export`, `eval`) goes through `inspect`: listing checks the
sizes, a resume checks every byte. Loading then goes through weights-only readers
(`trainer.safe_load`), so even a checkpoint whose manifest was rewritten to match planted
files runs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MANIFEST = "vlaunch_checkpoint.json"
FORMAT = 1
_CHUNK = 1 << 20
SMALL = 1 << 20
"""Files up to this size are checked byte for byte even when only listing checkpoints."""

Verdict = Literal["complete", "incomplete", "damaged"]

CHECKPOINT_PREFIX = "checkpoint_"
_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d{6,})$")
TRAINER_STATE = "trainer_state.json"
"""Where training is (step, samples, batch numbers); the commit manifest comes after it."""


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The step of a checkpoint folder name, or None if it is not one."""
    m = _CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Inspection:
    path: Path
    verdict: Verdict
    reason: str = ""
    """What is wrong (empty when complete), naming the file."""

    @property
    def ok(self) -> bool:
        return self.verdict == "complete"

    def note(self) -> str:
        return f"{self.path.name}: {self.verdict}: {self.reason}"


def _files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if (p.is_file() or p.is_symlink()) and p.name != MANIFEST
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(folder: Path, step: int) -> dict[str, Any]:
    """The manifest of a folder whose every file is written (not yet written to disk)."""
    files: dict[str, dict[str, Any]] = {}
    for path in _files(folder):
        if path.is_symlink():
            raise OSError(f"{path}: a checkpoint holds no symbolic links")
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256(path)}
    return {"format": FORMAT, "step": step, "files": files}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last (temporary file, flush, rename): the commit point."""
    tmp = folder / f".{MANIFEST}.tmp"
    try:
        with tmp.open("w") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)


def fsync_tree(folder: Path) -> None:
    """Flush a folder's files (and the folders) to disk before it is committed."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for path in sorted(p for p in folder.rglob("*") if p.is_dir()):
        fsync_dir(path)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not sync folders
        pass
    finally:
        os.close(fd)


def inspect(folder: Path, *, hashes: bool = False) -> Inspection:
    """Whether `folder` is a complete checkpoint: its manifest, then every file by size (and
    by SHA-256 with `hashes`), no file too many, and a readable trainer state."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return Inspection(folder, "incomplete", f"no {MANIFEST} (never committed)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        if manifest.get("step") != checkpoint_step(folder):
            raise ValueError(f"written for step {manifest.get('step')!r}")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        return Inspection(folder, "damaged", f"{manifest_path}: unreadable manifest ({e})")
    for rel, entry in files.items():
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            return Inspection(folder, "damaged", f"{manifest_path}: lists {rel!r}")
        try:
            size = path.stat().st_size
        except OSError:
            return Inspection(folder, "damaged", f"{path}: missing")
        if path.is_symlink() or not path.is_file():
            return Inspection(folder, "damaged", f"{path}: not a regular file")
        if size != entry.get("size"):
            return Inspection(
                folder, "damaged", f"{path}: {size} bytes, {entry.get('size')} were written"
            )
        if (hashes or size <= SMALL) and sha256(path) != entry.get("sha256"):
            return Inspection(folder, "damaged", f"{path}: its bytes changed since it was written")
    extra = [p for p in _files(folder) if p.relative_to(folder).as_posix() not in files]
    if extra:
        return Inspection(folder, "damaged", f"{extra[0]}: not written with the checkpoint")
    if TRAINER_STATE not in files:
        return Inspection(folder, "damaged", f"{folder / TRAINER_STATE}: missing")
    try:
        state = json.loads((folder / TRAINER_STATE).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step")
    except (OSError, ValueError, RecursionError) as e:
        return Inspection(folder, "damaged", f"{folder / TRAINER_STATE}: unreadable ({e})")
    return Inspection(folder, "complete")
