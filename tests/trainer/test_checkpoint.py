"""Checkpoint mechanics: RNG round trip, atomic commit, keep-last-K, incomplete folders."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import TrainerState, rng_state, set_rng_state
from trainer.host import LocalHost
from trainer.rundir import TRAINER_STATE, RunDir, write_json_atomic


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def _state(step: int) -> dict[str, object]:
    return {
        "step": step,
        "samples_consumed": step * 8,
        "total_steps": 10,
        "global_batch_size": 8,
        "micro_batch_size": 2,
        "grad_accum_steps": 4,
        "world_size": 1,
        "strategy": "ddp",
        "precision": "fp32",
        "seed": 0,
    }


def _writer(step: int):  # type: ignore[no-untyped-def]
    def write(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"x" * step)
        write_json_atomic(folder / TRAINER_STATE, _state(step))

    return write


def test_local_host_commits_atomically_and_keeps_the_last_k(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    host = LocalHost(run, keep_last=2, rank=0)
    for step in (2, 4, 6):
        host.save(step, _writer(step), {})
    assert [p.name for p in run.checkpoints()] == ["checkpoint_000004", "checkpoint_000006"]
    assert TrainerState.read(run.latest_checkpoint()).step == 6  # type: ignore[arg-type]

    def crash(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        host.save(8, crash, {})
    # The half-written checkpoint never appears under a real name; the last good one stays.
    assert not run.checkpoint_dir(8).exists()
    assert run.latest_checkpoint() == run.checkpoint_dir(6)
    host.save(8, _writer(8), {})  # the next save cleans up the leftover
    assert not list(run.path.glob(".checkpoint_*.tmp"))


def test_folder_without_trainer_state_is_not_a_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "checkpoint_000010").mkdir()
    (tmp_path / "checkpoint_000010" / "optimizer.pt").write_bytes(b"")
    assert run.latest_checkpoint() is None
