"""FSDP2 (`torch.distributed.fsdp.fully_shard`): each decoder layer is one shard unit, then
the root module (vision tower, projector, embeddings, head).

Parameters become DTensors after sharding, so the optimizer is built afterwards. Checkpoints
hold full (gathered) trainable weights and a full optimizer state keyed by parameter name,
written by rank 0, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.strategies.base import OPTIMIZER_FILE, Strategy, build_optimizer, dtype_of

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


class FsdpStrategy(Strategy):
    name = "fsdp"

    def prepare(
        self,
        model: nn.Module,
        param_groups: Callable[[nn.Module], list[dict[str, Any]]],
        *,
        layer_classes: tuple[type, ...] = (),
    ) -> None:
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

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
            if not p.requires_grad:
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
