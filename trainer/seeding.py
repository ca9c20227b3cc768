"""The RNG seeds of a run: set once at setup, then again at every optimizer step (and, under
`train.deterministic`, at every micro batch), each derived from the spec's seed and the
position in the run, so that a resumed run draws what an uninterrupted one drew."""

from __future__ import annotations

import random


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one rank's optimizer step (dropout etc.): resume-proof."""
    import numpy as np

    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def micro_batch_seed(seed: int, step: int, index: int) -> int:
    """The RNG seed of global micro batch `index` of optimizer step `step` (`train.deterministic`):
    resume-proof and the same whichever rank computes that micro batch. (A fourth word keeps
    it apart from the `step_seed`s.)"""
    import numpy as np

    return int(np.random.SeedSequence([seed, step, index, 1]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
