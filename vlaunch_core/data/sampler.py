"""Resumable, re-shardable batch samplers (no torch needed to compute the order).

Training order is defined globally, independent of the world size: epoch `e` is a permutation
of the mixture seeded by `(seed, e)`, cut into global batches of `global_batch_size` samples
(the incomplete tail is left out). Global batch `k` is optimizer step `k` of that epoch.
Each global batch is cut into `world_size x grad_accum` micro-batches of `micro_batch_size`;
micro-batch `j` goes to rank `j % world_size` as its accumulation step `j // world_size`.
So the samples of every optimizer step are the same whatever the world size, a run resumes
exactly at any step (`start_at`), and a resumed run may use a different number of ranks.

With sharded sources (Parquet row groups, tar shards), the epoch's order comes from a
`MixtureOrder` that keeps each such dataset's records in a block-local stream order
(`vlaunch_core.data.order`); it is still a function of the seed and the epoch alone.

`group_by_length` (LLaVA's `group_by_modality_length`) sorts each global batch by modality
(with media / text only) and length before cutting it, so each micro-batch holds samples of
one modality and similar length, and padding shrinks; the content of each step is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from vlaunch_core.data.order import MixtureOrder


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The global order of the samples in one epoch."""
    import numpy as np

    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


class GlobalBatchSampler:
    """A batch sampler for the training loader: yields this rank's micro-batches in order.

    `lengths[i]` is a length estimate of sample `i`, negative for text-only samples (the
    LLaVA convention); only used with `group_by_length`.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        global_batch_size: int,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = False,
        lengths: Sequence[int] | None = None,
        order: MixtureOrder | None = None,
    ) -> None:
        if micro_batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad micro batch {micro_batch_size} / rank {rank}/{world_size}")
        if global_batch_size % (micro_batch_size * world_size):
            raise UserError(
                f"global batch {global_batch_size} is not a multiple of micro batch "
                f"{micro_batch_size} x world size {world_size}",
                hint="use the batch plan of `vlaunch plan` (micro x accumulation x world = global)",
            )
        if num_samples < global_batch_size:
            raise UserError(
                f"the training mixture has {num_samples} samples, fewer than one global batch "
                f"({global_batch_size})",
                hint="lower train.global_batch_size or repeat the dataset (name*N in the mixture)",
            )
        if group_by_length and (lengths is None or len(lengths) != num_samples):
            raise ValueError("group_by_length needs one length per sample")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.lengths = lengths
        if order is not None and order.total != num_samples:
            raise ValueError(f"the order covers {order.total} samples, not {num_samples}")
        self.order = order
        self.epoch = 0
        self.start_step = 0

    @property
    def grad_accum(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start_step = 0

    def start_at(self, global_step: int) -> None:
        """Resume: the next batch is the first micro-batch of optimizer step `global_step`
        (counted from the start of training)."""
        self.epoch, self.start_step = divmod(global_step, self.steps_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "start_step": self.start_step,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "num_samples": self.num_samples,
        }

    def global_batch(self, order: Sequence[int] | np.ndarray, step: int) -> list[int]:
        """The samples of optimizer step `step` of an epoch, in micro-batch order."""
        g = self.global_batch_size
        batch = [int(i) for i in order[step * g : (step + 1) * g]]
        if self.group_by_length and self.lengths is not None:
            lengths = self.lengths
            batch.sort(key=lambda i: (lengths[i] < 0, -abs(lengths[i])))
        return batch

    def micro_batches(self, batch: Sequence[int]) -> list[list[int]]:
        """This rank's micro-batches of one global batch, in accumulation order."""
        m = self.micro_batch_size
        chunks = [list(batch[c * m : (c + 1) * m]) for c in range(len(batch) // m)]
        return chunks[self.rank :: self.world_size]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global order of the samples in `epoch`."""
        if self.order is not None:
            return self.order.epoch(epoch)
        return epoch_order(self.num_samples, self.seed, epoch, self.shuffle)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order(self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            yield from self.micro_batches(self.global_batch(order, step))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum


class EvalBatchSampler:
    """Evaluation: rank `r` takes samples r, r + world, ...; in order, no sample twice.

    Ranks may get a different number of batches (at most one apart): reduce sums (loss x
    tokens, correct answers) across ranks after the loop, not inside it.
    """

    def __init__(
        self, num_samples: int, *, micro_batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.indices = list(range(rank, num_samples, world_size))
        self.micro_batch_size = micro_batch_size

    def __iter__(self) -> Iterator[list[int]]:
        m = self.micro_batch_size
        for i in range(0, len(self.indices), m):
            yield self.indices[i : i + m]

    def __len__(self) -> int:
        return (len(self.indices) + self.micro_batch_size - 1) // self.micro_batch_size
