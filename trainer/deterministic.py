"""`train.deterministic`: an optimizer step whose gradient is the same bit for bit on any
world size (with the same micro batch size).

DDP all-reduces gradients: each rank first adds up its own micro batches, then the ranks'
sums are added across ranks, so the order of the float additions, and with it the last bits
of the update, depends on the world size. Here every micro batch's gradient is kept apart
(each backward under DDP's `no_sync`, copied into a row of a [accumulation, N] fp32 buffer),
the ranks' buffers are all-gathered, and every rank adds them up in the sampler's global
micro-batch order (`vlaunch_core/data/sampler.py`: global micro batch `j` is rank
`j % world`'s accumulation step `j // world`): `((g_0 + g_1) + g_2) + ...`. Dropout is
seeded per global micro batch, so the masks do not depend on which rank computes it either.

The price: world x accumulation x trainable-parameter fp32 gradients per rank, and an
all-gather of them instead of an all-reduce: meant for LoRA-sized trainable sets (the memory
estimate counts it). DDP strategy only (`vlaunch_core/spec_rules.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trainer.loss import TokenLoss, model_inputs
from trainer.seeding import micro_batch_seed, seed_everything
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

    from trainer.strategies.base import Strategy


def ordered_sum(grads: torch.Tensor) -> torch.Tensor:
    """Sum per-micro-batch gradients `grads[r, a]` (rank r, accumulation step a: shape
    [world, accum, ...]) one at a time in global micro-batch order `j = a * world + r`, so
    that the result depends only on the micro batches, not on how they were spread over ranks.
    """
    world, accum = grads.shape[0], grads.shape[1]
    total = grads[0, 0].clone()
    for j in range(1, world * accum):
        a, r = divmod(j, world)
        total += grads[r, a]
    return total


def ordered_micro_steps(
    strategy: Strategy,
    micro: Sequence[dict[str, Any]],
    tokens: float,
    loss_fn: TokenLoss,
    *,
    step: int,
) -> torch.Tensor:
    """Forward/backward this rank's micro batches of optimizer step `step` (0-based) with
    loss `sum(CE) / tokens`, each micro batch's gradient kept apart and dropout seeded per
    global micro batch; then leave in every trainable parameter's `.grad` the sum of every
    rank's micro-batch gradients in global order (`ordered_sum`). A parameter that no micro
    batch of any rank reached keeps no gradient, as in a plain run. Returns the summed token
    cross-entropy of this rank's micro batches (float64, on the device). Collective (one
    all-gather); one host sync (which parameters got a gradient)."""
    import torch

    if strategy.name != "ddp":
        raise UserError(
            f"train.deterministic works with train.strategy=ddp only, not '{strategy.name}'",
            hint="set train.strategy=ddp, or train.deterministic=false",
        )
    env = strategy.env
    params = strategy.trainable_parameters()
    sizes = [p.numel() for p in params]
    n = sum(sizes)
    width = n + len(params)  # the flattened gradients, then one has-a-gradient flag each
    local = torch.zeros((len(micro), width), dtype=torch.float32, device=env.device)
    scale = 1.0 / max(tokens, 1.0)  # summed over ranks below, not averaged as DDP does
    float_dtype = strategy.input_dtype()
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    for a, mb in enumerate(micro):
        index = a * env.world_size + env.rank  # the global micro batch (the sampler's order)
        seed_everything(micro_batch_seed(strategy.train.seed, step, index))
        with strategy.micro_step(False), strategy.autocast():  # never DDP's own sync
            inputs = model_inputs(mb, env.device, float_dtype)
            ce = loss_fn(strategy.forward, inputs, mb["labels"])
        strategy.backward(ce * scale)
        loss_sum += ce.detach()
        row, offset = local[a], 0
        for k, (p, size) in enumerate(zip(params, sizes, strict=True)):
            if p.grad is not None:
                row[offset : offset + size].copy_(p.grad.reshape(-1))
                row[n + k] = 1.0
                p.grad = None
            offset += size

    gathered = torch.empty(
        (env.world_size, len(micro), width), dtype=torch.float32, device=env.device
    )
    if env.distributed:
        import torch.distributed as dist

        dist.all_gather(list(gathered.unbind(0)), local)
    else:
        gathered[0].copy_(local)
    del local
    total = ordered_sum(gathered[:, :, :n])
    reached = (gathered[:, :, n:] > 0).any(dim=1).any(dim=0).tolist()
    del gathered
    offset = 0
    for p, size, got in zip(params, sizes, reached, strict=True):
        if got:
            grad = total[offset : offset + size].view_as(p)
            p.grad = grad if grad.dtype == p.dtype else grad.to(p.dtype)
        offset += size
    return loss_sum
