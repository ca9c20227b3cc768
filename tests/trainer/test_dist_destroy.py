"""`trainer.dist.destroy`: what holds the process group is freed before the group goes, while
the interpreter is alive (not during its finalization, where gloo's teardown can abort)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from trainer import dist


def test_destroy_frees_a_model_left_in_a_reference_cycle(tmp_path: Path) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection may free it first
    try:
        ddp = DistributedDataParallel(torch.nn.Linear(2, 2))
        owner: dict[str, Any] = {"model": ddp}
        owner["self"] = owner  # like a finished run's objects: a cycle holds the model
        model = weakref.ref(ddp)
        del ddp, owner
        assert model() is not None  # dropping the names does not free it
        dist.destroy()
        assert model() is None
        assert not torch_dist.is_initialized()
    finally:
        if enabled:
            gc.enable()
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
