"""Distribution strategies: DDP, FSDP2, DeepSpeed ZeRO-2/3 (+ CPU offload), imported lazily."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.dist import DistEnv
    from trainer.strategies.base import Strategy
    from vlaunch_core.planner import BatchPlan
    from vlaunch_core.spec import TrainSpec

logger = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3", "offload")


def build_strategy(
    name: str, env: DistEnv, precision: str, train: TrainSpec, batch: BatchPlan
) -> Strategy:
    """The strategy object for `train.strategy` on this rank."""
    if name == "ddp" or (name == "fsdp" and not env.distributed):
        from trainer.strategies.base import Strategy

        if name == "fsdp":
            logger.info("fsdp on one rank has nothing to shard: running it as plain PyTorch")
        return Strategy(env, precision, train)
    if name == "fsdp":
        from trainer.strategies.fsdp import FsdpStrategy

        return FsdpStrategy(env, precision, train)
    if name in ("zero2", "zero3", "offload"):
        from trainer.strategies.zero import ZeroStrategy

        return ZeroStrategy(env, precision, train, name=name, batch=batch)
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
