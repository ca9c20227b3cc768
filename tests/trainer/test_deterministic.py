"""`train.deterministic` without processes: the ordered sum of micro-batch gradients, one
deterministic step against a hand-made one, and the spec rule. The two-rank run against the
one-rank run, bit for bit, is tests/trainer/test_data_sources.py (slow)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from trainer.deterministic import ordered_micro_steps, ordered_sum
from trainer.dist import DistEnv
from trainer.loss import PlainLoss, summed_cross_entropy, target_tokens
from trainer.seeding import micro_batch_seed, seed_everything
from trainer.strategies.base import Strategy
from vlaunch_core.spec import TrainSpec
from vlaunch_core.spec_load import spec_from_dict
from vlaunch_core.spec_rules import cross_field_problems

# Four micro batches' gradients whose float32 sum depends on the order of the additions.
G = torch.tensor([[1.0], [2.0**-24], [0.0], [2.0**-24]], dtype=torch.float32)


def _laid_out(grads: torch.Tensor, world: int) -> torch.Tensor:
    """[world, accum, ...]: rank r's accumulation step a holds global micro batch a*world+r."""
    accum = grads.shape[0] // world
    return torch.stack([grads[r::world] for r in range(world)]).reshape(world, accum, -1)


def test_ordered_sum_is_the_same_on_any_world_size() -> None:
    one = ordered_sum(_laid_out(G, 1))
    sequential = ((G[0] + G[1]) + G[2]) + G[3]
    assert torch.equal(one, sequential)
    for world in (2, 4):
        assert torch.equal(ordered_sum(_laid_out(G, world)), one), world
    # DDP's order on two ranks (each rank's sum, then across ranks) rounds differently.
    per_rank = _laid_out(G, 2).sum(dim=1)
    assert not torch.equal(per_rank[0] + per_rank[1], one)


class _Toy(torch.nn.Module):
    """Embedding, dropout, head; `unused` gets no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.drop = torch.nn.Dropout(0.3)
        self.head = torch.nn.Linear(8, 11)
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        return SimpleNamespace(logits=self.head(self.drop(self.emb(input_ids))))


def _strategy(seed: int = 3) -> Strategy:
    torch.manual_seed(0)
    model = _Toy().train()
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    train = TrainSpec(deterministic=True, optimizer="sgd", seed=seed)
    strategy = Strategy(env, "fp32", train)
    strategy.prepare(model, lambda m: [{"params": list(m.parameters())}])
    return strategy


def _micro(gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    out = []
    for rows in (1, 3, 2):
        ids = torch.randint(0, 11, (rows, 7), generator=gen)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def test_deterministic_step_sums_seeded_micro_batches_in_order() -> None:
    micro = _micro(torch.Generator().manual_seed(1))
    tokens = sum(target_tokens(m["labels"]) for m in micro)
    strategy = _strategy()
    loss_sum = ordered_micro_steps(strategy, micro, tokens, PlainLoss(), step=5)
    model = strategy.base_model
    got = {n: p.grad for n, p in model.named_parameters()}
    assert got["unused.weight"] is None and got["unused.bias"] is None  # as in a plain run

    # By hand: each micro batch alone, dropout seeded by its global index, summed in order.
    want: dict[str, torch.Tensor] = {}
    want_loss = torch.zeros((), dtype=torch.float64)
    for j, mb in enumerate(micro):
        model.zero_grad(set_to_none=True)
        seed_everything(micro_batch_seed(3, 5, j))
        ce = summed_cross_entropy(model(mb["input_ids"]).logits, mb["labels"])
        (ce * (1.0 / tokens)).backward()
        want_loss += ce.detach()
        for n, p in model.named_parameters():
            if p.grad is not None:
                want[n] = p.grad.clone() if j == 0 else want[n] + p.grad
    assert want.keys() == {n for n, g in got.items() if g is not None}
    for n, g in want.items():
        assert torch.equal(got[n], g), n
    assert torch.equal(loss_sum, want_loss)

    # Dropout is on: another step draws other masks, so another gradient.
    other = _strategy()
    ordered_micro_steps(other, micro, tokens, PlainLoss(), step=6)
    other_grad = dict(other.base_model.named_parameters())["emb.weight"].grad
    assert other_grad is not None and not torch.equal(other_grad, want["emb.weight"])
    # The strategy's step then updates from these gradients as usual.
    before = model.head.weight.detach().clone()
    for n, p in model.named_parameters():
        p.grad = got[n]
    strategy.step()
    assert not torch.equal(model.head.weight, before)
    assert model.head.weight.grad is None


def test_deterministic_is_for_ddp_only() -> None:
    raw = {
        "name": "t",
        "model": {"name_or_path": "tiny:llava"},
        "data": {"mixture": "a", "datasets": {"a": {"data_path": "train.json"}}},
        "resources": {"profile": "a100-80gb", "gpus_per_node": 8},
        "train": {"global_batch_size": 64, "deterministic": True, "strategy": "fsdp"},
    }
    spec = spec_from_dict(raw, check=False)
    problems = [p for p in cross_field_problems(spec) if p.where.startswith("train")]
    assert [p.where for p in problems] == ["train.deterministic"]
    assert "ddp" in (problems[0].hint or "") and "fsdp" in problems[0].message
    spec = spec_from_dict({**raw, "train": {**raw["train"], "strategy": "ddp"}}, check=False)
    assert not [p for p in cross_field_problems(spec) if p.where.startswith("train")]


@pytest.mark.parametrize("deterministic", [False, True])
def test_memory_estimate_counts_the_kept_gradients(deterministic: bool) -> None:
    from vlaunch_core.plan import make_plan

    raw = {
        "name": "t",
        "model": {"name_or_path": "tiny:llava"},
        "data": {"mixture": "a", "datasets": {"a": {"data_path": "train.json"}}},
        "resources": {"profile": "a100-80gb", "gpus_per_node": 4},
        "train": {"global_batch_size": 32, "micro_batch_size": 2, "deterministic": deterministic},
    }
    plan = make_plan(spec_from_dict(raw, check=False))
    assert plan.memory is not None
    n_train = sum(plan.memory.trainable_params.values())
    ddp = 2 * n_train * 4  # the gradients and DDP's buckets
    extra = (1 + 4) * 4 * n_train * 4 + n_train * 4 if deterministic else 0  # accumulation 4
    assert plan.memory.parts["gradients"] == ddp + extra
