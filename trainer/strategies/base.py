"""What every distribution strategy does for the loop, and the plain / DDP strategy.

A strategy wraps the model, owns the optimizer step, and knows how to get full trainable
weights and the optimizer state in and out of a checkpoint. The loop never branches on the
strategy's name.

Gradient averaging: DDP, FSDP and DeepSpeed all *average* gradients over ranks. The loop
scales each micro batch's summed loss by `world_size / tokens_in_the_whole_step`, so the
averaged gradient is the gradient of the mean token loss over every micro batch of every rank.
Under `train.deterministic` (DDP only) the loop sums the micro batches' gradients itself, in
the global micro-batch order, with loss `sum(CE) / tokens` (`trainer.deterministic`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainer.dist import DistEnv
    from vlaunch_core.spec import TrainSpec

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"


def build_optimizer(groups: list[dict[str, Any]], train: TrainSpec, *, fused: bool) -> Any:
    import torch

    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=0.0)
    kwargs: dict[str, Any] = {"lr": train.lr, "betas": tuple(train.betas), "eps": train.eps}
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def dtype_of(precision: str) -> torch.dtype:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


class Strategy:
    """Plain PyTorch on one rank, or DDP on several; the base of the sharded strategies."""

    name = "ddp"

    @property
    def loads_shards(self) -> bool:
        """Whether `prepare` takes a skeleton with deferred weights and reads only this
        rank's shard of them (`load_model(low_memory=True)`)."""
        return False

    def __init__(self, env: DistEnv, precision: str, train: TrainSpec) -> None:
        self.env = env
        self.precision = precision
        self.train = train
        self.model: nn.Module | None = None
        self.unwrapped: nn.Module | None = None
        """The model as built (no DDP/FSDP/DeepSpeed wrapper): names match the checkpoint."""
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None

    # ------------------------------------------------------------------ setup

    def prepare(
        self,
        model: nn.Module,
        param_groups: Callable[[nn.Module], list[dict[str, Any]]],
        *,
        layer_classes: tuple[type, ...] = (),
    ) -> None:
        """Move and wrap `model`, then build the optimizer over `param_groups(model)`."""
        import torch
        from torch.nn.parallel import DistributedDataParallel

        if self.train.deterministic and self.env.device.type == "cuda":
            _deterministic_kernels()
        model.to(self.env.device)
        self.unwrapped = model
        if self.env.distributed:
            on_gpu = self.env.device.type == "cuda"
            self.model = DistributedDataParallel(
                model,
                device_ids=[self.env.device] if on_gpu else None,
                gradient_as_bucket_view=True,
            )
        else:
            self.model = model
        # torch's fused AdamW runs on the CPU too: about 5x faster than its per-tensor loop
        # here (3.8M parameters: 3.2 ms against 16.8 ms a step, one thread), and what
        # transformers' Trainer uses by default since torch 2.8
        self.optimizer = build_optimizer(param_groups(model), self.train, fused=True)
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.env.device.type)

    @property
    def base_model(self) -> nn.Module:
        assert self.unwrapped is not None, "prepare() first"
        return self.unwrapped

    # ------------------------------------------------------------------ step

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=dtype_of(self.precision))

    @contextlib.contextmanager
    def micro_step(self, is_last: bool) -> Iterator[None]:
        """Context of one micro batch's forward+backward; syncs gradients on the last."""
        model: Any = self.model
        if is_last or not hasattr(model, "no_sync"):
            yield
        else:
            with model.no_sync():
                yield

    def input_dtype(self) -> torch.dtype | None:
        """Dtype for floating inputs (pixel values): float32 in fp32 runs (Llama 4's image
        processor returns bfloat16 pixels); under autocast (bf16/fp16) autocast casts them."""
        import torch

        return torch.float32 if self.precision == "fp32" else None

    def forward(self, batch: dict[str, Any]) -> Any:
        assert self.model is not None
        return self.model(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        assert self.model is not None
        return [p for p in self.model.parameters() if p.requires_grad]

    def step(self) -> torch.Tensor | float:
        """Clip, update, zero the gradients; return the gradient norm before clipping (a
        device tensor: reading it would wait for the device)."""
        import torch

        assert self.optimizer is not None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.train.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), max_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        result: torch.Tensor = norm.detach()
        return result

    # ------------------------------------------------------------------ state

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Full trainable weights on CPU on rank 0 (empty elsewhere). Collective."""
        if not self.env.is_main:
            return {}
        return {
            name: p.detach().to("cpu", copy=True)
            for name, p in self.base_model.named_parameters()
            if saved(name, p)
        }

    def save_optimizer(self, folder: Path) -> None:
        """Write the optimizer state into a checkpoint folder. Collective."""
        import torch

        assert self.optimizer is not None
        if self.env.is_main:
            state = {"optimizer": self.optimizer.state_dict()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            torch.save(state, folder / OPTIMIZER_FILE)

    def load_optimizer(self, folder: Path) -> None:
        from trainer.safe_load import torch_load

        assert self.optimizer is not None
        state = torch_load(folder / OPTIMIZER_FILE, map_location=self.env.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def check_resume(self, saved_world_size: int) -> None:
        """Raise a user error if this strategy cannot resume state saved on another world."""


def saved(name: str, param: torch.nn.Parameter) -> bool:
    """Whether a checkpoint holds this parameter: the trainable ones, and every tensor of a
    PEFT `modules_to_save` copy (PEFT saves and loads the whole copy; frozen parts of it,
    such as Granite-Docling's unused `connector.fine`, keep the base model's values)."""
    return param.requires_grad or ".modules_to_save." in name


def _deterministic_kernels() -> None:
    """`train.deterministic` on CUDA: ask torch for deterministic kernels (warning where an
    operation has none) and cuBLAS for a fixed workspace. Not tested on GPUs here: CPU runs
    are the ones shown bit for bit (tests/trainer/test_data_sources.py)."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
