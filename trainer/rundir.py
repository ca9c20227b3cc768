"""The run directory `<output.dir>/<name>/`: one place for everything a run writes.

The same folder is Ray Train's experiment directory (`RunConfig(name, storage_path)`), so
Ray's checkpoint snapshot lives next to ours and the same name resumes the same run whether
it runs under Ray, torchrun or in one process.

    <output.dir>/<name>/
      spec.yaml              the resolved job spec of the latest start
      plan.json              the batch plan and memory prediction of the latest start
      status.json            running | stopped | finished | failed, step, checkpoint
      metrics.jsonl          one JSON object per logged step (and per evaluation)
      tensorboard/           TensorBoard event files
      loss.png               the loss curve
      checkpoint_000040/     resumable checkpoints (the last `train.keep_last`)
      adapter/ | model/      the final export, with a README on how to load it
      eval.json              held-out accuracy before and after training
      STOP                   present while a graceful stop is requested
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainer.commit import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE,
    Inspection,
    checkpoint_name,
    checkpoint_step,
    inspect,
)
from vlaunch_core.errors import UserError

__all__ = ["CHECKPOINT_PREFIX", "TRAINER_STATE", "RunDir", "checkpoint_name", "checkpoint_step"]

RunState = Literal["running", "stopped", "finished", "failed"]


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (nothing is created until written)."""

    path: Path

    @classmethod
    def for_spec(cls, output_dir: str, name: str) -> RunDir:
        return cls((Path(output_dir).expanduser() / name).absolute())

    spec_file = property(lambda self: self.path / "spec.yaml")
    plan_file = property(lambda self: self.path / "plan.json")
    status_file = property(lambda self: self.path / "status.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")
    loss_plot = property(lambda self: self.path / "loss.png")
    adapter_dir = property(lambda self: self.path / "adapter")
    model_dir = property(lambda self: self.path / "model")
    eval_file = property(lambda self: self.path / "eval.json")
    stop_file = property(lambda self: self.path / "STOP")

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / checkpoint_name(step)

    def checkpoint_folders(self) -> list[Path]:
        """Every `checkpoint_NNNNNN` folder, complete or not, oldest first."""
        if not self.path.is_dir():
            return []
        found = []
        for child in self.path.iterdir():
            step = checkpoint_step(child)
            if step is not None and child.is_dir() and not child.is_symlink():
                found.append((step, child))
        return [p for _, p in sorted(found)]

    def inspect_checkpoints(self, *, hashes: bool = False) -> list[Inspection]:
        """The commit check of every checkpoint folder (trainer/commit.py), oldest first."""
        return [inspect(p, hashes=hashes) for p in self.checkpoint_folders()]

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (committed, every file as written), oldest first."""
        return [i.path for i in self.inspect_checkpoints() if i.ok]

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ------------------------------------------------------------------ status

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def write_status(self, state: RunState, **fields: Any) -> None:
        """Atomically replace status.json (rank 0 only)."""
        data = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
        write_json_atomic(self.status_file, data)

    @property
    def user_error_file(self) -> Path:
        return self.path / ".user_error.json"

    def record_user_error(self, error: UserError, *, claimed: bool) -> None:
        """Remember a user error met by any rank (the driver reports it; a restarted worker
        group stops at once instead of meeting it again). `claimed`: whether the run's files
        were already written (else the driver leaves status.json as it was). Best effort:
        the disk may be full."""
        data = {"error": error.message, "fix": error.hint, "claimed": claimed}
        with contextlib.suppress(OSError):
            write_json_atomic(self.user_error_file, data)

    def read_user_error(self) -> tuple[UserError, bool] | None:
        """(the recorded user error, whether the run's files were written), or None."""
        try:
            data = json.loads(self.user_error_file.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            return None
        fix = data.get("fix")
        error = UserError(data["error"], hint=fix if isinstance(fix, str) else None)
        return error, bool(data.get("claimed", True))

    def clear_user_error(self) -> None:
        self.user_error_file.unlink(missing_ok=True)

    def request_stop(self, reason: str) -> None:
        """Ask the workers to checkpoint at the next step boundary and stop."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.stop_file.write_text(reason + "\n")

    def clear_stop(self) -> None:
        self.stop_file.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file next to `path`, then rename it over `path` (a failed
    write, e.g. a full disk, leaves `path` as it was and no temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
