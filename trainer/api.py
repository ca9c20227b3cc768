"""The trainer's public surface: the pieces a run is built from, one optimizer step.

The loop (`trainer.loop.Recipe`), the benchmarks (`bench/`) and the tests build a run from
these, so that what is measured and tested is what trains:

    env = dist.init_distributed(use_gpu=..., timeout_minutes=...)
    strategy = build_strategy(spec, env, plan)
    built = build_model(spec, plan.precision, low_memory=strategy.loads_shards)
    strategy.prepare(built.model, built.param_groups, layer_classes=built.layer_classes)
    data = build_data(spec, built, env, plan.batch)
    loss = build_loss(spec, strategy)
    out = train_step(strategy, micro_batches, target_tokens_of_the_step, loss)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.loss import PlainLoss, TokenLoss, model_inputs
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    import torch

    from trainer.data.build import TrainData
    from trainer.dist import DistEnv
    from trainer.models.tuning_report import TuningReport
    from trainer.strategies.base import Strategy
    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.plan import Plan
    from vlaunch_core.planner import BatchPlan
    from vlaunch_core.spec import JobSpec

__all__ = [
    "BuiltModel",
    "StepOutput",
    "build_data",
    "build_loss",
    "build_model",
    "build_strategy",
    "input_tokens",
    "train_step",
]

WEIGHT_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
"""Frozen weights are held in the compute dtype; what is trained stays fp32."""


@dataclass
class BuiltModel:
    """A model ready for a strategy's `prepare`, with what the run needs next to it."""

    model: Any
    processor: Any
    """None for `random:<name>` models (no tokenizer)."""
    family: ModelDescription
    tuning_report: TuningReport
    param_groups: Callable[[Any], list[dict[str, Any]]]
    """Optimizer parameter groups of the (wrapped) model, per-module learning rates."""
    layer_classes: tuple[type, ...]
    """Decoder / vision-encoder layer classes (FSDP wrapping, activation checkpointing)."""


@dataclass
class StepOutput:
    """One rank's optimizer step. Nothing here waited for the device: the loss and the
    gradient norm are device tensors (the loop reads them in the next step's one sync)."""

    loss_sum: torch.Tensor
    """Summed token cross-entropy of this rank's micro batches (float64, on the device)."""
    input_tokens: int
    """Tokens this rank computed (padding excluded), counted on the CPU batch."""
    grad_norm: torch.Tensor | float
    """Gradient norm before clipping (a device tensor; a float under DeepSpeed)."""


def build_strategy(spec: JobSpec, env: DistEnv, plan: Plan) -> Strategy:
    """The spec's strategy (ddp, fsdp, zero2, zero3, offload) on this rank."""
    from trainer.strategies import build_strategy as build

    return build(spec.train.strategy, env, plan.precision, spec.train, plan.batch)


def build_model(
    spec: JobSpec,
    precision: str,
    *,
    device: torch.device | str | None = None,
    low_memory: bool = False,
    materialize: bool = True,
    require_processor: bool = True,
) -> BuiltModel:
    """Load the spec's model and apply its tuning (LoRA/QLoRA/LayerNorm/full per module),
    trainable weights in fp32. `low_memory` defers the weights to the strategy (FSDP,
    ZeRO-3); `materialize=False` leaves deferred fp32 masters to be read shard by shard."""
    from trainer.models.deferred import trainable_fp32
    from trainer.models.loading import load_model
    from trainer.models.tuning import apply_tuning, param_groups

    loaded = load_model(
        spec.model,
        dtype=WEIGHT_DTYPES.get(precision, "float32"),
        device=device,
        tuning=spec.tuning,
        low_memory=low_memory,
    )
    if require_processor and loaded.processor is None:
        raise UserError(
            f"model '{spec.model.name_or_path}' has no tokenizer or processor to encode "
            "the training data with",
            hint="use a model folder or hub id with its processor, or tiny:<type>",
        )
    if spec.data.packing:  # SDPA per sample of a packed row, not over the whole row
        from trainer.models.packed_attention import use_packed_attention

        use_packed_attention(loaded.model)
    from trainer.models.patch_embed import linear_patch_embeddings

    linear_patch_embeddings(loaded.model)  # one-patch Conv3d embeddings as a matrix product
    model: Any
    model, report = apply_tuning(
        loaded.model,
        loaded.family,
        spec.tuning,
        gradient_checkpointing=spec.train.gradient_checkpointing,
    )
    trainable_fp32(model, materialize=materialize)
    names = set(loaded.family.layer_classes)
    layer_classes = tuple({type(m) for m in model.modules() if type(m).__name__ in names})
    tr = spec.train

    def groups(wrapped: Any) -> list[dict[str, Any]]:
        return param_groups(wrapped, report, lr=tr.lr, weight_decay=tr.weight_decay)

    return BuiltModel(model, loaded.processor, loaded.family, report, groups, layer_classes)


def build_data(spec: JobSpec, built: BuiltModel, env: DistEnv, batch: BatchPlan) -> TrainData:
    """The training mixture, this rank's resumable global-batch sampler and the collator
    (packed rows of M-RoPE models get each sample's own 3-D positions: `trainer.data.positions`)."""
    from trainer.data.build import build_train_data
    from trainer.data.positions import rope_index

    return build_train_data(
        spec,
        built.processor,
        built.family,
        rank=env.rank,
        world_size=env.world_size,
        micro_batch_size=batch.micro_batch_size,
        global_batch_size=batch.global_batch_size,
        rope_index=rope_index(built.model) if spec.data.packing else None,
    )


def build_loss(spec: JobSpec, strategy: Strategy) -> TokenLoss:
    """The token loss `train.loss` asks for, on the prepared model (`trainer.loss`)."""
    from trainer.loss_head import build_loss as build

    return build(spec.train.loss, strategy.base_model, strategy.env.device)


def input_tokens(micro: Sequence[dict[str, Any]]) -> int:
    """Tokens the micro batches hold, padding excluded (CPU tensors: no device sync)."""
    total = 0
    for mb in micro:
        mask = mb.get("attention_mask")
        total += int(mask.sum()) if mask is not None else int(mb["input_ids"].numel())
    return total


def train_step(
    strategy: Strategy,
    micro: Sequence[dict[str, Any]],
    tokens: float,
    loss: TokenLoss | None = None,
    *,
    step: int = 0,
) -> StepOutput:
    """One optimizer step: forward/backward every micro batch with loss
    `sum(CE) * world / tokens` (`tokens`: target tokens of the step on all ranks; gradient
    sync on the last micro batch only), then clip and update. `loss`: `build_loss`'s (the
    plain loss over full logits when None). No host sync: the returned loss and gradient norm
    stay on the device.

    Under `train.deterministic` the micro batches' gradients are summed over all ranks in
    the global micro-batch order instead, dropout seeded per micro batch from the spec's seed
    and `step` (the 0-based optimizer step): `trainer.deterministic`."""
    import torch

    env = strategy.env
    loss_fn: TokenLoss = loss if loss is not None else PlainLoss()
    if strategy.train.deterministic:
        from trainer.deterministic import ordered_micro_steps

        loss_sum = ordered_micro_steps(strategy, micro, tokens, loss_fn, step=step)
        return StepOutput(loss_sum, input_tokens(micro), strategy.step())
    scale = env.world_size / max(tokens, 1.0)
    float_dtype = strategy.input_dtype()
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    for i, mb in enumerate(micro):
        with strategy.micro_step(i == len(micro) - 1), strategy.autocast():
            inputs = model_inputs(mb, env.device, float_dtype)
            ce = loss_fn(strategy.forward, inputs, mb["labels"])
        strategy.backward(ce * scale)
        loss_sum += ce.detach()
    return StepOutput(loss_sum, input_tokens(micro), strategy.step())
