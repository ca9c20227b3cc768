"""DeepSpeed ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload (`offload`).

The DeepSpeed config is generated from the spec and the plan (`deepspeed_config`), with the
batch numbers of the plan exactly, so DeepSpeed's own batch check always agrees with ours.
The optimizer is torch's AdamW with the tuning plan's parameter groups (per-module learning
rates); the loop's LR schedule drives it. On CPU, DeepSpeed runs on its CPU accelerator with
gloo.

Low-memory loading: a skeleton with deferred weights (`load_model(low_memory=True)`, zero3
and offload) is partitioned before `deepspeed.initialize`, one module at a time, and each
rank reads only its flat partition of every deferred weight from the checkpoint; DeepSpeed then
partitions the rest (adapters) itself.

Checkpoints: the adapter and the other trainable weights are gathered in full (ZeRO-3
partitions them) like every strategy; the ZeRO optimizer state (with fp32 master weights) is
DeepSpeed's own per-rank files under `deepspeed/`, so a ZeRO run resumes on the same number
of ranks only. DeepSpeed reads them back through `trainer.safe_load` (weights only), never
with its own `torch.load(weights_only=False)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.hostmem import release_free_memory
from trainer.models.deferred import deferred_weights, detach_weights, from_checkpoint
from trainer.safe_load import guard_deepspeed
from trainer.strategies.base import Strategy, build_optimizer, dtype_of, saved
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vlaunch_core.planner import BatchPlan
    from vlaunch_core.spec import TrainSpec

logger = logging.getLogger(__name__)

DS_FOLDER = "deepspeed"
DS_TAG = "state"


def deepspeed_config(
    strategy: str,
    precision: str,
    train: TrainSpec,
    batch: BatchPlan,
    *,
    layer_numel: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config of a job: ZeRO stage, offload, precision, batch, clipping.

    With `layer_numel` (the largest decoder layer), DeepSpeed's buffers are sized to the
    model instead of its defaults (5e8-element buckets, 1e9 live parameters): ZeRO-3 keeps
    one layer gathered plus one prefetched, as the memory estimator assumes.
    """
    zero: dict[str, Any] = {"stage": 2 if strategy == "zero2" else 3}
    if strategy == "offload":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if zero["stage"] == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if layer_numel:
        zero["reduce_bucket_size"] = layer_numel
        zero["allgather_bucket_size"] = layer_numel
        if zero["stage"] == 3:
            zero["stage3_prefetch_bucket_size"] = layer_numel
            zero["stage3_max_live_parameters"] = 2 * layer_numel
            zero["stage3_max_reuse_distance"] = layer_numel
    return {
        "train_batch_size": batch.global_batch_size,
        "train_micro_batch_size_per_gpu": batch.micro_batch_size,
        "gradient_accumulation_steps": batch.grad_accum_steps,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "auto_cast": False},
        # torch's AdamW with our parameter groups, also when states live on the CPU
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _ensure_process_group() -> None:
    """DeepSpeed needs a process group even on one rank."""
    for key, value in (
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
    ):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


class ZeroStrategy(Strategy):
    def __init__(self, *args: Any, name: str, batch: BatchPlan, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name
        self.batch = batch
        self.engine: Any = None

    @property
    def loads_shards(self) -> bool:
        return self.env.distributed and self.name != "zero2"

    def prepare(
        self,
        model: nn.Module,
        param_groups: Callable[[nn.Module], list[dict[str, Any]]],
        *,
        layer_classes: tuple[type, ...] = (),
    ) -> None:
        import deepspeed

        if not self.env.distributed:
            _ensure_process_group()
        backend = "nccl" if self.env.device.type == "cuda" else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
        layer_numel = max(
            (
                sum(getattr(p, "ds_numel", p.numel()) for p in m.parameters())
                for m in model.modules()
                if layer_classes and isinstance(m, layer_classes)
            ),
            default=0,
        )
        config = deepspeed_config(
            self.name, self.precision, self.train, self.batch, layer_numel=layer_numel
        )
        weights = deferred_weights(model)
        if weights is not None:
            partition_deferred(model, weights, config, self.env.device, dtype_of(self.precision))
            detach_weights(model)
        elif self.env.device.type == "cpu":
            model.to("cpu")
        optimizer = build_optimizer(param_groups(model), self.train, fused=False)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        guard_deepspeed(engine)  # its checkpoint files are read weights-only
        self.engine = engine
        self.unwrapped = engine.module
        self.model = engine
        self.optimizer = optimizer  # the LR schedule drives the base optimizer's groups

    def autocast(self) -> Any:
        import contextlib

        return contextlib.nullcontext()  # DeepSpeed holds the weights in bf16/fp16 itself

    def input_dtype(self) -> torch.dtype | None:
        return dtype_of(self.precision)

    def micro_step(self, is_last: bool) -> Any:
        import contextlib

        return contextlib.nullcontext()  # DeepSpeed counts micro steps itself

    def backward(self, loss: torch.Tensor) -> None:
        # The loop normalises the loss over the whole step; no extra 1/accumulation.
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # only updates at the accumulation boundary

    def step(self) -> torch.Tensor | float:
        norm = self.engine.get_global_grad_norm()  # a float or a tensor, by version
        return norm if norm is not None else float("nan")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        import deepspeed

        params = [(n, p) for n, p in self.base_model.named_parameters() if saved(n, p)]
        out: dict[str, torch.Tensor] = {}
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None):
            if self.env.is_main:
                out = {n: p.detach().to("cpu", copy=True) for n, p in params}
        return out

    def save_optimizer(self, folder: Path) -> None:
        self.engine.save_checkpoint(
            str(folder / DS_FOLDER),
            tag=DS_TAG,
            client_state={},
            save_latest=False,
            exclude_frozen_parameters=True,
        )

    def load_optimizer(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder / DS_FOLDER),
            tag=DS_TAG,
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise UserError(
                f"{folder / DS_FOLDER}: no DeepSpeed state to resume from",
                hint="the checkpoint is incomplete; delete it to resume from the one before",
            )

    def check_resume(self, saved_world_size: int) -> None:
        if saved_world_size != self.env.world_size:
            raise UserError(
                f"this {self.name} checkpoint was written by {saved_world_size} ranks; ZeRO "
                f"optimizer states cannot be resumed on {self.env.world_size}",
                hint=f"resume on {saved_world_size} devices, or use train.strategy=ddp or fsdp "
                "(they resume on any number of devices)",
            )


def partition_deferred(
    model: nn.Module, weights: Any, config: dict[str, Any], device: torch.device, dtype: Any
) -> None:
    """ZeRO-3-partition the deferred weights of a skeleton, reading only this rank's part.

    Module by module, the placeholders become allocated (untouched) tensors that ZeRO
    partitions at once (`zero.Init(module=...)`, then the same Init for the rest); each rank
    then reads elements `[rank * p, rank * p + p)` of the flattened weight into its partition
    (`ds_tensor`, p = ceil(numel / world)). Values in memory (adapters, trained parameters)
    are cast to DeepSpeed's dtype (it casts only models it partitions itself) and left to
    `deepspeed.initialize`.
    """
    import deepspeed
    import torch

    from_file = from_checkpoint(model, weights)
    names = {id(p): n for n, p in model.named_parameters()}
    with torch.no_grad():
        for module in model.modules():
            for key, buf in module._buffers.items():
                if buf is not None:
                    module._buffers[key] = buf.to(device)
        for name, p in model.named_parameters():
            if not from_file[name] and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
        convert: Any = None
        for module in model.modules():
            group: list[Any] = [
                p
                for p in module.parameters(recurse=False)
                if from_file.get(names.get(id(p), ""), False) and not hasattr(p, "ds_id")
            ]
            if not group:
                continue
            for p in group:
                p.data = torch.empty(p.shape, dtype=dtype if p.is_floating_point() else p.dtype)
            if convert is None:
                deepspeed.zero.Init(
                    module=torch.nn.ParameterList(group), config_dict_or_path=config
                )
                convert = group[0].convert_to_zero_parameters
            else:
                convert(param_list=group)
            for p in group:
                part = p.ds_tensor
                size = part.ds_numel
                start = size * deepspeed.comm.get_rank(group=p.ds_process_group)
                n = max(0, min(size, p.ds_numel - start))
                weights.read(names[id(p)], start, part.data[:n])
            release_free_memory()  # the full tensors ZeRO just received and freed
    logger.info(
        "ZeRO-3: read this rank's partitions of %d weights (%.1f MiB) from the checkpoint",
        sum(from_file.values()),
        weights.read_bytes / 2**20,
    )
