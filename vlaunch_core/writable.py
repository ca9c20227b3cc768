"""Can this machine write the run directory? Checked before a local run starts (before Ray
starts, before `vlaunch run` joins a cluster), so that a file in the way or a read-only folder
is one user error, not a worker traceback after Ray started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec


def check_run_dir_writable(spec: JobSpec) -> None:
    """Raise a user error when `<output.dir>/<name>` cannot be created or written here."""
    if "://" in spec.output.dir:
        return  # refused (or handled) by the backend
    root = Path(spec.output.dir).expanduser().absolute()
    run = root / spec.name
    for folder in (root, run):
        if folder.exists() and not folder.is_dir():
            raise UserError(
                f"output.dir={spec.output.dir}: {folder} is a file, the run directory "
                "must be a folder",
                hint="set output.dir to a folder (it is created when missing)",
            )
    existing = run
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise UserError(
                f"output.dir={spec.output.dir}: {existing} is a file, not a folder",
                hint="set output.dir to a folder (it is created when missing)",
            )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"output.dir={spec.output.dir}: {existing} is not writable here (read-only or "
            "no permission)",
            hint="set output.dir to a folder this user can write, e.g. output.dir=runs",
        )
