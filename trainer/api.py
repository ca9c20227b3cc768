"""The trainer's public surface: the pieces a run is built from, one optimizer step.

The loop (`trainer.loop.Recipe`), the benchmarks (`bench/`) and the tests build a run from
these, so that what is measured and tested is what trains:

    env = dist.init_distributed(use_gpu=..., timeout_minutes=...)
    strategy = build_strategy(spec, env, plan)
    built = build_model(spec, plan.precision, low_memory=strategy.loads_shards)
    strategy.prepare(built.model, built.param_groups, layer_classes=built.layer_classes)
    data = build_data(spec, built, env, plan.batch)
    out = train_step(strategy, micro_batches, target_tokens_of_the_step)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.loss import model_inputs, summed_cross_entropy
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

__all__ = ["BuiltModel", "StepOutput", "build_data", "build_model", "build_strategy", "train_step"]

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
    loss_sum: float
    """Summed token cross-entropy of this rank's micro batches."""
    input_tokens: int
    """Tokens this rank computed (padding excluded)."""
    grad_norm: float


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
    """The training mixture, this rank's resumable global-batch sampler and the collator."""
    from trainer.data.build import build_train_data

    return build_train_data(
        spec,
        built.processor,
        built.family,
        rank=env.rank,
        world_size=env.world_size,
        micro_batch_size=batch.micro_batch_size,
        global_batch_size=batch.global_batch_size,
    )


def train_step(strategy: Strategy, micro: Sequence[dict[str, Any]], tokens: float) -> StepOutput:
    """One optimizer step: forward/backward every micro batch with loss
    `sum(CE) * world / tokens` (`tokens`: target tokens of the step on all ranks; gradient
    sync on the last micro batch only), then clip and update."""
    env = strategy.env
    scale = env.world_size / max(tokens, 1.0)
    float_dtype = strategy.input_dtype()
    loss_sum = 0.0
    input_tokens = 0
    for i, mb in enumerate(micro):
        with strategy.micro_step(i == len(micro) - 1), strategy.autocast():
            inputs = model_inputs(mb, env.device, float_dtype)
            logits = strategy.forward({**inputs, "use_cache": False}).logits
            ce = summed_cross_entropy(logits, mb["labels"])
        strategy.backward(ce * scale)
        loss_sum += float(ce.detach())
        mask = mb.get("attention_mask")
        input_tokens += int(mask.sum()) if mask is not None else int(mb["input_ids"].numel())
    return StepOutput(loss_sum, input_tokens, strategy.step())
