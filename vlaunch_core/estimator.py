"""Per-device memory prediction, without loading weights and without a GPU.

The prediction is split into the parts people reason about:

- weights: every parameter, in the dtype the trainer keeps it in (frozen: compute dtype;
  trained: fp32 master weights; QLoRA language-model linears: 4-bit NF4 + quantisation
  constants), divided by the world size under FSDP / ZeRO-3;
- gradients: fp32, one per trained parameter (sharded from ZeRO-2 on; DDP adds its buckets;
  `train.deterministic` adds (1 + world) x accumulation copies);
- optimizer: AdamW's two fp32 moments per trained parameter (+ the fp32 master copy that
  DeepSpeed keeps when it trains in bf16/fp16), sharded from ZeRO-2 on, on the host with
  `offload`;
- activations: what autograd keeps for one micro batch of `data.max_length` tokens (image
  tokens included), with or without gradient checkpointing, plus the loss: the full logits
  with `train.loss=plain`, one chunk of them otherwise (`loss_bytes`);
- overhead: CUDA context, NCCL and allocator slack (a stated constant).

Parameter and optimizer-state bytes are exact (counted from the analytic parameter table
that `vlaunch_core/models/shapes.py` checks against a meta-device model); activations and overhead
are a model of the truth, measured against GPUs in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GIB = 1024**3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: CUDA context + cuBLAS/NCCL workspaces + allocator slack per GPU process.
GPU_OVERHEAD_BYTES = int(1.25 * GIB)
#: Python + torch + transformers resident per CPU worker process.
CPU_OVERHEAD_BYTES = int(1.0 * GIB)
#: NF4 storage per weight: 4 bits + 8-bit absmax per 64 + fp32 per 256 absmax (double quant).
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
SHARDED = ("fsdp", "zero3", "offload")


class ParamLike(Protocol):
    name: str
    shape: tuple[int, ...]
    kind: str
    module: str


@dataclass(frozen=True)
class Shape:
    """What the activation model needs from a model config."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    vision_hidden: int = 0
    vision_layers: int = 0
    vision_intermediate: int = 0
    vision_tokens_per_image: int = 0


@dataclass(frozen=True)
class TrainingSetup:
    """The knobs of a run that change memory."""

    modes: dict[str, str]
    precision: str  # bf16 | fp16 | fp32
    strategy: str  # ddp | fsdp | zero2 | zero3 | offload
    world_size: int
    micro_batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    is_gpu: bool
    optimizer: str = "adamw"
    lora_r: int = 16
    use_dora: bool = False
    lora_targets: str | Sequence[str] | None = None
    vision_lora_targets: str | Sequence[str] | None = None
    images_per_sample: int = 1
    unused_prefixes: tuple[str, ...] = ()
    """Parameters the forward pass never uses (e.g. LLaVA's vision layers after the feature
    layer): frozen whatever the mode."""
    module_prefixes: tuple[str, ...] = ()
    """Prefixes of the vision-tower and projector modules: peft copies these modules whole
    (modules_to_save) when they are trained next to LoRA; bare parameters outside them are not
    copied."""
    loss: str = "plain"
    """`train.loss`: `plain` holds the logits of the micro batch; the others one chunk."""
    deterministic_accum: int = 0
    """`train.deterministic`: the accumulation steps (0: off). Each rank then holds its
    micro batches' gradients apart and every rank's gathered (`trainer.deterministic`)."""


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, int]
    capacity: int
    headroom: float
    trainable_params: dict[str, int]
    total_params: int
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def usable(self) -> int:
        return int(self.capacity * (1.0 - self.headroom))

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    def to_json(self) -> dict[str, Any]:
        return {
            "parts_bytes": dict(self.parts),
            "total_bytes": self.total,
            "capacity_bytes": self.capacity,
            "usable_bytes": self.usable,
            "headroom": self.headroom,
            "fits": self.fits,
            "trainable_params": dict(self.trainable_params),
            "total_params": self.total_params,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MemoryEstimate:
        """The estimate `to_json` wrote (a saved plan)."""
        return cls(
            parts={k: int(v) for k, v in d["parts_bytes"].items()},
            capacity=int(d["capacity_bytes"]),
            headroom=float(d["headroom"]),
            trainable_params={k: int(v) for k, v in d["trainable_params"].items()},
            total_params=int(d["total_params"]),
            notes=tuple(d.get("notes", ())),
        )


def numel(shape: Iterable[int]) -> int:
    return math.prod(shape)


def _matches(name: str, targets: str | Sequence[str] | None) -> bool:
    """peft's `target_modules` rules for the module owning parameter `name`."""
    from vlaunch_core.models.description import module_matches

    if targets is None:
        return False
    module = name.rsplit(".", 1)[0]
    return module_matches(module, targets if isinstance(targets, str) else list(targets))


def _unused(name: str, setup: TrainingSetup) -> bool:
    return any(name == u or name.startswith(u.rstrip(".") + ".") for u in setup.unused_prefixes)


def trained_in_full(p: ParamLike, setup: TrainingSetup) -> bool:
    """Whether base parameter `p` itself is trained (full, or a norm under LayerNorm tuning)."""
    mode = setup.modes.get(p.module, "frozen")
    if _unused(p.name, setup):
        return False
    return mode == "full" or (mode == "layernorm" and p.kind == "norm")


def trainable_counts(table: Sequence[ParamLike], setup: TrainingSetup) -> dict[str, int]:
    """Trainable parameters per module under the tuning modes (LoRA adapters counted)."""
    out = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for p in table:
        if p.module not in out:
            continue
        mode = setup.modes.get(p.module, "frozen")
        if trained_in_full(p, setup):
            out[p.module] += numel(p.shape)
        elif (
            mode in ("lora", "qlora")
            and p.kind == "linear"
            and p.name.endswith(".weight")
            and not _unused(p.name, setup)
        ):
            vision = p.module == "vision_tower"
            targets = setup.vision_lora_targets if vision else setup.lora_targets
            if _matches(p.name, targets):
                fan_out, fan_in = p.shape[0], p.shape[1]
                out[p.module] += setup.lora_r * (fan_in + fan_out)
                if setup.use_dora:
                    out[p.module] += fan_out
    return out


def _weight_bytes(
    table: Sequence[ParamLike], setup: TrainingSetup, trainable: dict[str, int]
) -> float:
    compute = DTYPE_BYTES[setup.precision]
    deepspeed = setup.strategy in ("zero2", "zero3", "offload")
    peft = any(m in ("lora", "qlora") for m in setup.modes.values())
    total = 0.0
    for p in table:
        n = numel(p.shape)
        mode = setup.modes.get(p.module, "frozen")
        if peft and p.module in ("vision_tower", "projector"):
            # peft's modules_to_save keeps a frozen original next to the trained copy: of the
            # whole module when it is trained in full (its unused parameters included), of the
            # used norms under LayerNorm tuning.
            in_module = any(p.name.startswith(m + ".") for m in setup.module_prefixes)
            if (mode == "full" and in_module) or (
                mode == "layernorm" and trained_in_full(p, setup)
            ):
                total += n * compute
        if trained_in_full(p, setup):
            # Trained base weights are fp32 master weights (autocast computes in `precision`);
            # DeepSpeed keeps them in the compute dtype and the fp32 copy in the optimizer.
            total += n * (compute if deepspeed else 4)
        elif (
            mode == "qlora"
            and p.kind == "linear"
            and p.name.endswith(".weight")
            and p.module == "language_model"
        ):
            total += n * NF4_BYTES_PER_PARAM
        else:
            total += n * compute
    adapters = sum(
        trainable[m]
        for m, mode in setup.modes.items()
        if mode in ("lora", "qlora") and m in trainable
    )
    return total + adapters * 4  # LoRA adapters train in fp32


def estimate(
    table: Sequence[ParamLike],
    shape: Shape,
    setup: TrainingSetup,
    *,
    capacity: int,
    headroom: float,
) -> MemoryEstimate:
    trainable = trainable_counts(table, setup)
    n_train = sum(trainable.values())
    world = max(1, setup.world_size)
    sharded = setup.strategy in SHARDED
    deepspeed = setup.strategy in ("zero2", "zero3", "offload")
    notes: list[str] = []

    weights = _weight_bytes(table, setup, trainable)
    if sharded:
        weights /= world
        # Under FSDP/ZeRO-3 one decoder layer is gathered at a time (plus one prefetched).
        per_layer = sum(
            numel(p.shape) for p in table if p.module == "language_model" and p.kind != "embedding"
        ) / max(1, shape.layers)
        weights += 2 * per_layer * DTYPE_BYTES[setup.precision]
    grads = n_train * 4.0
    if setup.strategy == "ddp" and world > 1:
        grads *= 2  # DDP's reducer buckets hold a second copy while gradients are reduced
    if setup.strategy in ("zero2", *SHARDED):
        grads /= world
    if setup.deterministic_accum:
        # this rank's micro-batch gradients, every rank's gathered, and their sum
        grads += (1 + world) * setup.deterministic_accum * n_train * 4.0 + n_train * 4.0
        notes.append(
            f"train.deterministic holds {(1 + world) * setup.deterministic_accum + 1} more "
            "copies of the trainable gradients (this rank's micro batches', every rank's "
            "gathered, their sum)"
        )
    if setup.optimizer == "adamw":
        optim = n_train * 8.0
        if deepspeed and setup.precision != "fp32":
            optim += n_train * 4.0  # fp32 master weights live with the optimizer
    else:
        optim = 0.0
    if setup.strategy in ("zero2", *SHARDED):
        optim /= world
    if setup.strategy == "offload":
        notes.append("optimizer states are offloaded to host memory")
        optim = 0.0

    act = activation_bytes(shape, setup)
    overhead = GPU_OVERHEAD_BYTES if setup.is_gpu else CPU_OVERHEAD_BYTES
    parts = {
        "weights": int(weights),
        "gradients": int(grads),
        "optimizer": int(optim),
        "activations": int(act),
        "overhead": overhead,
    }
    return MemoryEstimate(
        parts=parts,
        capacity=capacity,
        headroom=headroom,
        trainable_params=trainable,
        total_params=sum(numel(p.shape) for p in table),
        notes=tuple(notes),
    )


def loss_bytes(shape: Shape, setup: TrainingSetup, tokens: int) -> float:
    """What the loss holds at its peak for `tokens` positions (all counted as targets).

    Plain: the logits in the compute dtype, their fp32 upcast and its gradient. Chunked or
    Liger (`trainer.linear_ce`): one chunk's logits (about as many elements as the hidden
    states of all rows, at least 64 rows) in the compute dtype, fp32 and the gradient's
    compute-dtype copy; the target rows' hidden states and their fp32 gradient; and, when the
    output layer is trained, its fp32 gradient, computed in the forward and held until the
    backward hands it over."""
    b = DTYPE_BYTES[setup.precision]
    if setup.loss == "plain":
        return tokens * shape.vocab * (b + 4 + 4)
    rows = max(64, math.ceil(tokens * shape.hidden / max(1, shape.vocab)))
    chunk = min(tokens, rows) * shape.vocab * (b + 4 + b)
    hidden = tokens * shape.hidden * (b + 4)
    head = shape.vocab * shape.hidden * 4 if setup.modes.get("language_model") == "full" else 0
    return chunk + hidden + head


def activation_bytes(shape: Shape, setup: TrainingSetup) -> float:
    """Activations kept for backward for one micro batch (see module docstring)."""
    b = DTYPE_BYTES[setup.precision]
    tokens = setup.micro_batch_size * setup.seq_len
    kv = shape.hidden * shape.kv_heads // max(1, shape.heads)
    # LLaMA-style decoder layer with SDPA (no seq^2 term): norm inputs/outputs, q/k/v,
    # attention output, residuals, and the gated MLP's four intermediate tensors; RMSNorm
    # upcasts to fp32.
    per_token_layer = (6 * shape.hidden + 2 * kv + 4 * shape.intermediate) * b + 8 * shape.hidden
    llm_trains = setup.modes.get("language_model", "frozen") != "frozen"
    below_trains = any(
        setup.modes.get(m, "frozen") != "frozen" for m in ("vision_tower", "projector")
    )
    if not llm_trains and not below_trains:
        lm = 0.0
    elif setup.gradient_checkpointing:
        lm = tokens * (shape.layers * shape.hidden * b + per_token_layer)
    else:
        lm = tokens * shape.layers * per_token_layer
    logits = loss_bytes(shape, setup, tokens)

    vision = 0.0
    if setup.modes.get("vision_tower", "frozen") != "frozen" and shape.vision_layers:
        v_tokens = setup.micro_batch_size * setup.images_per_sample * shape.vision_tokens_per_image
        v_layer = (6 * shape.vision_hidden + 2 * shape.vision_intermediate) * b
        if setup.gradient_checkpointing:
            vision = v_tokens * (shape.vision_layers * shape.vision_hidden * b + v_layer)
        else:
            vision = v_tokens * shape.vision_layers * v_layer
    return lm + logits + vision
