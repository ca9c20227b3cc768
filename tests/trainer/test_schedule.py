"""The LR schedule: warmup, decay shapes, and continuity across a resume."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainer.schedule import build_scheduler, lr_factor, warmup_steps_for
from vlaunch_core.spec import TrainSpec


def test_warmup_then_cosine_to_zero() -> None:
    f = [lr_factor(s, kind="cosine", warmup=4, total=20) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0)
    assert f[12] == pytest.approx(0.5)  # half way through the decay
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))
    assert lr_factor(20, kind="cosine", warmup=4, total=20) == pytest.approx(0.0)


def test_linear_and_constant() -> None:
    assert lr_factor(5, kind="linear", warmup=0, total=10) == pytest.approx(0.5)
    assert lr_factor(9, kind="constant", warmup=2, total=10) == 1.0
    assert lr_factor(0, kind="constant", warmup=2, total=10) == 0.5


def test_warmup_steps_from_ratio_or_steps() -> None:
    assert warmup_steps_for(TrainSpec(warmup_ratio=0.1), 95) == math.ceil(9.5)
    assert warmup_steps_for(TrainSpec(warmup_steps=500), 100) == 100


def test_resumed_scheduler_continues_on_the_same_curve() -> None:
    train = TrainSpec(lr=1e-3, warmup_steps=3, scheduler="cosine")

    def fresh() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=train.lr)
        return opt, build_scheduler(opt, train, total_steps=12)

    opt, sched = fresh()
    straight = []
    for _ in range(12):
        straight.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()

    opt, sched = fresh()
    resumed = []
    for _ in range(5):
        resumed.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt, sched = fresh()
    sched.load_state_dict(state)
    for _ in range(7):
        resumed.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert resumed == straight
    assert straight[0] == pytest.approx(1e-3 / 3) and straight[2] == pytest.approx(1e-3)
