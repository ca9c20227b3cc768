"""Learning-rate schedules: linear warmup, then cosine / linear decay to zero, or constant.

The schedule is a pure function of the optimizer step, and the scheduler's state is saved in
every checkpoint, so a resumed run continues on the same curve (transformers#27749 is the
bug this avoids: a resumed run restarting its warmup or decay).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vlaunch_core.spec import TrainSpec


def warmup_steps_for(train: TrainSpec, total_steps: int) -> int:
    if train.warmup_steps is not None:
        return min(train.warmup_steps, total_steps)
    return math.ceil(train.warmup_ratio * total_steps)


def lr_factor(step: int, *, kind: str, warmup: int, total: int) -> float:
    """Multiplier of the peak LR for the update made at `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSpec, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    from torch.optim.lr_scheduler import LambdaLR

    warmup = warmup_steps_for(train, total_steps)
    kind = train.scheduler

    def factor(step: int) -> float:
        return lr_factor(step, kind=kind, warmup=warmup, total=total_steps)

    return LambdaLR(optimizer, factor)


def resync_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set every group's learning rate to this schedule's value at the scheduler's step.

    After a resume the optimizer's groups hold the learning rate the *saved* run was at; when
    the schedule changed (a raised `train.max_steps`), that is the old curve's value, 0 at the
    end of a cosine decay. The same formula as `LambdaLR`, so an unchanged schedule gives
    exactly the saved values."""
    step = scheduler.last_epoch
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in groups]
