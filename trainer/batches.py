"""Micro batches for the loop, from the data package's resumable sampler, epoch after epoch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.spec import DataSpec
    from trainer.data.build import TrainData


def loader_workers(data: DataSpec, local_world_size: int) -> int:
    """`data.num_workers`, with `auto` = the cores this rank may use beyond its own, max 4."""
    if data.num_workers != "auto":
        return int(data.num_workers)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores // max(1, local_world_size) - 1))


def micro_batches(
    data: TrainData,
    *,
    start_step: int,
    num_workers: int,
    prefetch_factor: int | None,
    pin_memory: bool,
) -> Iterator[dict[str, Any]]:
    """This rank's micro batches from optimizer step `start_step` on, forever (epochs roll)."""
    data.sampler.start_at(start_step)
    while True:
        for batch in data.loader(
            num_workers=num_workers, prefetch_factor=prefetch_factor, pin_memory=pin_memory
        ):
            if batch.num_samples == 0:
                raise UserError(
                    "a micro batch has no samples left after the overlength policy",
                    hint="raise data.max_length or use data.overlength=truncate_text",
                )
            yield batch.inputs
        data.sampler.set_epoch(data.sampler.epoch + 1)
