"""FSDP2 (`torch.distributed.fsdp.fully_shard`): each decoder layer is one shard unit, then
the root module (vision tower, projector, embeddings, head).

Parameters become DTensors after sharding, so the optimizer is built afterwards. A skeleton
with deferred weights (`load_model(low_memory=True)`) is sharded on the meta device and each
rank then reads only its rows of every deferred weight from the checkpoint. Checkpoints
hold full (gathered) trainable weights and a full optimizer state keyed by parameter name,
written by rank 0, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.strategies.base import OPTIMIZER_FILE, Strategy, build_optimizer, dtype_of, saved

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


class FsdpStrategy(Strategy):
    name = "fsdp"

    @property
    def loads_shards(self) -> bool:
        return True

    def prepare(
        self,
        model: nn.Module,
        param_groups: Callable[[nn.Module], list[dict[str, Any]]],
        *,
        layer_classes: tuple[type, ...] = (),
    ) -> None:
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from trainer.models.deferred import deferred_weights, detach_weights

        weights = deferred_weights(model)
        loading = _ShardedLoad(model, weights) if weights is not None else None
        if loading is None:
            model.to(self.env.device)
        mp = MixedPrecisionPolicy()
        if self.precision in ("bf16", "fp16"):
            mp = MixedPrecisionPolicy(
                param_dtype=dtype_of(self.precision), reduce_dtype=torch.float32
            )
        layers = [m for m in model.modules() if layer_classes and isinstance(m, layer_classes)]
        if not layers:
            logger.warning(
                "FSDP: no module of the family's decoder-layer classes %s was found; "
                "sharding the whole model as one unit",
                [c.__name__ for c in layer_classes],
            )
        for layer in layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        if loading is not None:
            loading.fill(self.env.device, self.env.rank, self.env.world_size)
            detach_weights(model)
        self.unwrapped = model
        self.model = model
        self.optimizer = build_optimizer(
            param_groups(model), self.train, fused=self.env.device.type == "cuda"
        )
        if self.precision == "fp16":
            from torch.amp import GradScaler

            self.scaler = GradScaler(self.env.device.type)

    def autocast(self) -> Any:
        import contextlib

        return contextlib.nullcontext()  # the mixed-precision policy casts

    def micro_step(self, is_last: bool) -> Any:
        import contextlib

        model: Any = self.base_model
        model.set_requires_gradient_sync(is_last)
        return contextlib.nullcontext()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, p in self.base_model.named_parameters():
            if not saved(name, p):
                continue
            full = p.full_tensor() if hasattr(p, "full_tensor") else p  # all ranks gather
            if self.env.is_main:
                out[name] = full.detach().to("cpu", copy=True)
        return out

    def _options(self, **kw: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kw)

    def save_optimizer(self, folder: Path) -> None:
        import torch
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        assert self.optimizer is not None
        state = get_optimizer_state_dict(
            self.base_model, self.optimizer, options=self._options(cpu_offload=True)
        )
        if self.env.is_main:
            torch.save({"optimizer": state}, folder / OPTIMIZER_FILE)

    def load_optimizer(self, folder: Path) -> None:
        import torch
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        assert self.optimizer is not None
        state: dict[str, Any] = {}
        if self.env.is_main:
            state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)[
                "optimizer"
            ]
        set_optimizer_state_dict(
            self.base_model,
            self.optimizer,
            state,
            options=self._options(broadcast_from_rank0=True),
        )


class _ShardedLoad:
    """Shard a skeleton on the meta device, then fill each rank's rows from the checkpoint.

    Before sharding: values already in memory (adapters, trained parameters) and buffers are
    kept aside and every parameter goes to the meta device. After `fully_shard`, `to_empty`
    allocates this rank's shards only; `fill` writes rows `[rank * c, (rank + 1) * c)` of dim
    0 (c = ceil(rows / world), FSDP2's `torch.chunk` layout) of each parameter.
    """

    def __init__(self, model: nn.Module, weights: Any) -> None:
        import torch

        from trainer.models.deferred import from_checkpoint

        self.model = model
        self.weights = weights
        self.from_file = from_checkpoint(model, weights)
        self.kept = {n: p.detach() for n, p in model.named_parameters() if not self.from_file[n]}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        metas: dict[int, torch.nn.Parameter] = {}
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is None:
                    continue
                if id(p) not in metas:
                    metas[id(p)] = torch.nn.Parameter(
                        torch.empty_like(p, device="meta"), requires_grad=p.requires_grad
                    )
                module._parameters[name] = metas[id(p)]

    def fill(self, device: torch.device, rank: int, world: int) -> None:
        import torch

        self.model.to_empty(device=device)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                local = p.to_local() if hasattr(p, "to_local") else p
                rows = p.shape[0] if p.ndim else 1
                chunk = -(-rows // world)
                start = min(rows, rank * chunk)
                stop = min(rows, start + chunk)
                if local.ndim and local.shape[0] != stop - start:
                    raise AssertionError(
                        f"{name}: local shard has {local.shape[0]} rows, expected rows "
                        f"[{start}, {stop}) of {rows} (FSDP's layout changed?)"
                    )
                if self.from_file[name]:
                    per_row = math.prod(p.shape[1:]) if p.ndim else 1
                    self.weights.read(name, start * per_row, local)
                else:
                    local.copy_(self.kept[name][start:stop] if p.ndim else self.kept[name])
            for name, b in self.model.named_buffers():
                b.copy_(self.buffers[name])
        logger.info(
            "FSDP: read this rank's shards of %d weights (%.1f MiB) from the checkpoint",
            sum(self.from_file.values()),
            self.weights.read_bytes / 2**20,
        )
