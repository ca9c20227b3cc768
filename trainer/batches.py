"""Micro batches for the loop, from the data package's resumable sampler, epoch after epoch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from trainer.data.build import TrainData

logger = logging.getLogger(__name__)


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
    if start_step > 0 and data.sampler.rank == 0:
        for name, (shard, index) in data.resume_positions(start_step).items():
            logger.info("resuming %s at %s sample %d (step %d)", name, shard, index, start_step)
    while True:
        for batch in _unwrapped(
            data.loader(
                num_workers=num_workers, prefetch_factor=prefetch_factor, pin_memory=pin_memory
            )
        ):
            if batch.num_samples == 0:
                raise UserError(
                    "a micro batch has no samples left after the overlength policy",
                    hint="raise data.max_length or use data.overlength=truncate_text",
                )
            yield batch.inputs
        data.sampler.set_epoch(data.sampler.epoch + 1)


def _unwrapped(loader: Any) -> Iterator[Any]:
    """The loader's batches; a user error raised in a loader worker process comes back as the
    user error itself (torch re-raises it with the worker's whole traceback as its message)."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except UserError as e:
            raise worker_user_error(e) from None
        yield batch


_WORKER_PREFIX = "Caught UserError in DataLoader worker"


def worker_user_error(e: UserError) -> UserError:
    """The original user error of one torch re-raised from a DataLoader worker."""
    text = str(e)
    if not text.startswith(_WORKER_PREFIX):
        return e
    marker = "UserError: "
    original = text[text.rfind(marker) + len(marker) :].strip() if marker in text else text
    message, _, hint = original.partition("\n  fix: ")
    return UserError(message.strip(), hint=hint.strip() or None)
