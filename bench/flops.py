"""Model FLOPs of one training micro-batch, for MFU. How they are counted:

Forward, per module (vision tower, projector, language model):
  2 x (weights of its matmuls: linear and conv, embeddings and norms left out) x tokens it
  processes, plus attention 4 x (sequence length) x (attention width) per token and layer
  (QK^T and AV, no causal discount: the PaLM / Megatron convention). The language model
  processes every position of the row (image tokens included) and its LM head (also when
  tied to the embeddings); the vision tower every patch of every image (LLaVA: the layers up to
  the feature layer only); the projector every image token.
Backward: 1x forward for the input gradients when any module at or below it trains (LoRA
  included), plus 1x forward for the weight gradients when it is trained in full; attention
  has no weights, its backward is 2x forward when gradients flow through it.
LoRA adapters: 2 x (adapter weights) x tokens forward, and 2x that backward (input and weight
  gradients); the adapter weights are the planner's count (`MemoryEstimate.trainable_params`
  of a LoRA part).
Gradient checkpointing's recomputed forward is not counted (model FLOPs, not hardware FLOPs),
so MFU does not reward recomputation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bench.gpu_batches import BatchShape

if TYPE_CHECKING:
    from vlaunch_core.models.description import ModelDescription

PARTS = ("vision_tower", "projector", "language_model")
_LAYER = re.compile(r"\.(?:layers|blocks)\.(\d+)\.")


def _sizes(d: ModelDescription) -> dict[str, Any]:
    weights = dict.fromkeys(PARTS, 0)
    vision_layers: set[int] = set()
    unused = d.unused_prefixes
    for p in d.params:
        if p.module not in weights or any(p.name.startswith(u) for u in unused):
            continue
        if p.kind in ("linear", "conv") and p.name.endswith("weight"):
            weights[p.module] += p.numel
        m = _LAYER.search(p.name)
        if p.module == "vision_tower" and m:
            vision_layers.add(int(m.group(1)))
    if d.tied_embeddings:  # a tied LM head is listed once, as the embedding, but multiplies
        weights["language_model"] += d.text.vocab * d.text.hidden
    return {
        "weights": weights,
        "hidden": d.text.hidden,
        "layers": d.text.layers,
        "vision_hidden": d.vision.hidden,
        "vision_layers": len(vision_layers),
    }


def backward_factors(modes: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(input-gradient, weight-gradient) multipliers of each part's forward FLOPs."""
    trains = {part: modes.get(part, "frozen") != "frozen" for part in PARTS}
    igrad = {
        "vision_tower": trains["vision_tower"],
        "projector": trains["vision_tower"],
        "language_model": any(trains.values()),
    }
    return {part: (int(igrad[part]), int(modes.get(part) == "full")) for part in PARTS}


def micro_batch_flops(
    description: ModelDescription,
    modes: dict[str, str],
    shape: BatchShape,
    adapters: dict[str, int] | None = None,
) -> dict[str, float]:
    """Training FLOPs of one micro-batch of `shape`: per part, `matmul` (weights and LoRA
    adapters), `attention`, and `total`. `adapters`: LoRA weights per part."""
    s = _sizes(description)
    w = s["weights"]
    tokens = shape.samples * shape.seq_len
    images = shape.samples
    forward = {
        "vision_tower": 2 * w["vision_tower"] * images * shape.vision_tokens,
        "projector": 2 * w["projector"] * images * shape.image_tokens,
        "language_model": 2 * w["language_model"] * tokens,
    }
    attention = {
        "vision_tower": 4.0
        * s["vision_layers"]
        * shape.vision_tokens
        * s["vision_hidden"]
        * images
        * shape.vision_tokens,
        "projector": 0.0,
        "language_model": 4.0 * s["layers"] * shape.seq_len * s["hidden"] * tokens,
    }
    part_tokens = {
        "vision_tower": images * shape.vision_tokens,
        "projector": images * shape.image_tokens,
        "language_model": tokens,
    }
    factors = backward_factors(modes)
    out: dict[str, float] = {"matmul": 0.0, "attention": 0.0}
    for part in PARTS:
        igrad, wgrad = factors[part]
        lora = (adapters or {}).get(part, 0) if modes.get(part) in ("lora", "qlora") else 0
        matmul = forward[part] * (1 + igrad + wgrad) + 6.0 * lora * part_tokens[part]
        attn = attention[part] * (1 + 2 * igrad)
        out[part] = float(matmul + attn)
        out["matmul"] += matmul
        out["attention"] += attn
    out["total"] = out["matmul"] + out["attention"]
    return out
