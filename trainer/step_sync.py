"""One host sync per optimizer step: everything the ranks must agree on or report travels in
one all-reduce, and its result is the only value the host waits for.

At the start of step k, before its first forward, each rank contributes:

- the target tokens of step k, counted on the CPU batch (every micro batch's loss is scaled
  by the step's total over all ranks);
- its stop flag (every rank stops at the same step boundary);
- whether its data failed (a user error every rank raises at the same step boundary);
- step k-1's summed loss, input tokens and gradient norm (rank 0's): the loss and the norm
  stayed on the device during step k-1;
- every `train.host_memory_every` steps, its host memory in its own 3 of `3 x world` slots
  (this was an all-gather of its own every step).

So step k-1 is logged when step k starts; a flush (`exchange` with nothing new) reports the
last step, and a step before a checkpoint or an evaluation. Summing is exact for what it
carries: counts are integers, and each rank fills only its own memory slots (the gradient
norm, the same on every rank, only from rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.api import StepOutput
    from trainer.dist import DistEnv
    from trainer.hostmem import HostMemoryGuard

HEAD = 7
"""Slots before the memory table: targets, stop, loss, input tokens, grad norm, has previous,
data errors."""


@dataclass(frozen=True)
class StepTotals:
    """One optimizer step's numbers summed over the ranks."""

    loss_sum: float
    input_tokens: float
    grad_norm: float


@dataclass(frozen=True)
class Exchanged:
    tokens: float
    """Target tokens of the step about to run, all ranks."""
    stop: bool
    """Some rank was asked to stop."""
    data_error: bool
    """Some rank's data failed (`trainer.dist.agree` raises the same error on every rank)."""
    previous: StepTotals | None
    memory: dict[str, Any] | None
    """Host-memory metrics (`HostMemoryGuard.summarise`) when sampled."""


class StepSync:
    def __init__(self, env: DistEnv, host_memory: HostMemoryGuard | None = None) -> None:
        self.env = env
        self.host_memory = host_memory
        self.exchanges = 0
        """All-reduces so far (tests count them)."""

    def exchange(
        self,
        *,
        targets: int = 0,
        stop: bool = False,
        data_error: bool = False,
        previous: StepOutput | None = None,
        memory: bool = False,
    ) -> Exchanged:
        """One all-reduce and one host sync (see the module docstring)."""
        import torch

        from trainer import dist

        env = self.env
        host = torch.zeros(HEAD + 3 * env.world_size, dtype=torch.float64)
        host[0] = float(targets)
        host[1] = 1.0 if stop else 0.0
        host[6] = 1.0 if data_error else 0.0
        if previous is not None:
            host[3] = float(previous.input_tokens)
            host[5] = 1.0
        sample_memory = memory and self.host_memory is not None
        if sample_memory:
            assert self.host_memory is not None
            start = HEAD + 3 * env.rank
            host[start : start + 3] = torch.tensor(self.host_memory.sample(), dtype=torch.float64)
        vec = host.to(env.device)
        if previous is not None:  # device values: no sync here
            vec[2] = previous.loss_sum.detach().to(vec)
            if env.rank == 0:
                vec[4] = torch.as_tensor(previous.grad_norm).detach().to(vec)
        if dist.is_initialized():
            import torch.distributed as tdist

            tdist.all_reduce(vec, op=tdist.ReduceOp.SUM)
        self.exchanges += 1
        values = vec.tolist()  # the step's one host sync
        prev = None
        if values[5] > 0:
            prev = StepTotals(values[2], values[3], values[4])
        mem = None
        if sample_memory:
            assert self.host_memory is not None
            table = [values[HEAD + 3 * r : HEAD + 3 * r + 3] for r in range(env.world_size)]
            mem = self.host_memory.summarise(table)
        return Exchanged(values[0], values[1] > 0, values[6] > 0, prev, mem)
