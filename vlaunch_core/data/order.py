"""The global training order of a mixture, with locality for sharded sources.

Mixture position `i` names part `k` (a dataset of the mixture, repeated `repeat` times in a
row) and record `(i - start_k) % size_k` of its source. Epoch `e` is, as before any sharded
source existed, the permutation `default_rng([seed, e]).permutation(N)` of the positions:
for a mixture of JSON and Arrow datasets nothing else happens.

A part with locality blocks (Parquet row groups, tar shards; `Source.blocks()`) keeps the
places the permutation gives it, but the records that fill them come in a stream order: the
blocks shuffled by `(seed, e, k, pass)`, each block's records in storage order (sequential
sources) or shuffled within the block (Parquet). So the t-th time part k appears in the
epoch, it takes the t-th record of its stream. The order depends on the seed, the epoch and
the mixture only, never on the world size, so a resumed run on any number of ranks reads
exactly the records an uninterrupted run would; and a rank reading its micro-batches moves
forward through a few blocks at a time instead of jumping across the whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PartLayout:
    """One part of the mixture as the order sees it."""

    size: int
    repeat: int = 1
    blocks: tuple[int, ...] | None = None
    """Record counts of the locality blocks in storage order (None: no locality needed)."""
    sequential: bool = False
    """Records of a block in storage order (True) or shuffled within the block (False)."""


class MixtureOrder:
    """`epoch(e)`: the order of mixture positions in epoch `e` (see the module docstring)."""

    def __init__(self, parts: Sequence[PartLayout], seed: int, shuffle: bool = True) -> None:
        self.parts = list(parts)
        self.seed = seed
        self.shuffle = shuffle
        self.starts: list[int] = []
        total = 0
        for p in self.parts:
            if p.blocks is not None and sum(p.blocks) != p.size:
                raise ValueError(f"blocks {sum(p.blocks)} != size {p.size}")
            self.starts.append(total)
            total += p.size * p.repeat
        self.total = total

    @classmethod
    def plain(cls, n: int, seed: int, shuffle: bool = True) -> MixtureOrder:
        """One part without locality: the plain seeded permutation."""
        return cls([PartLayout(n)], seed, shuffle)

    def epoch(self, epoch: int) -> np.ndarray:
        import numpy as np

        if not self.shuffle:
            return np.arange(self.total)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.total)
        blocked = [k for k, p in enumerate(self.parts) if p.blocks is not None]
        if not blocked:
            return order
        part_of = np.searchsorted(np.asarray(self.starts), order, side="right") - 1
        for k in blocked:
            mask = part_of == k
            order[mask] = self.starts[k] + self.stream(k, epoch)
        return order

    def stream(self, k: int, epoch: int) -> np.ndarray:
        """Part k's records in the order the epoch takes them: offsets in
        `[0, size x repeat)`, pass r covering `[r x size, (r + 1) x size)`."""
        import numpy as np

        p = self.parts[k]
        assert p.blocks is not None
        bounds = np.concatenate([[0], np.cumsum(p.blocks)])
        out = []
        for r in range(p.repeat):
            rng = np.random.default_rng([self.seed, epoch, k + 1, r])
            for b in rng.permutation(len(p.blocks)):
                n = p.blocks[b]
                inner = np.arange(n) if p.sequential else rng.permutation(n)
                out.append(r * p.size + bounds[b] + inner)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def part(self, i: int) -> tuple[int, int]:
        """(part number, record index in its source) of mixture position `i`."""
        import bisect

        k = bisect.bisect_right(self.starts, i) - 1
        return k, (i - self.starts[k]) % self.parts[k].size
