"""Parameter tables of the building blocks of VLMs (text decoders, vision towers), torch-free.

Defaults are those of the transformers 5 config classes, for the keys a hub `config.json` may
leave out; `tests/models/test_shapes.py` checks them against the real classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from vlaunch_core.errors import UserError

Entry = tuple[str, tuple[int, ...], str]
"""(parameter name, shape, kind)."""

_SAME_AS_HEADS = -1

#: Text backbones: defaults and layout switches.
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": _SAME_AS_HEADS,
    },
    "granite": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": _SAME_AS_HEADS,
    },
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "qwen2": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "qkv_bias": True,
    },
    "qwen2_vl_text": {
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "qkv_bias": True,
    },
    "qwen2_5_vl_text": {
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "qkv_bias": True,
    },
    "gemma": {
        "vocab_size": 256000,
        "hidden_size": 3072,
        "intermediate_size": 24576,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 256,
    },
    "gemma2": {
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "sandwich_norms": True,
    },
    "mllama_text_model": {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    },
}

VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip_vision_model": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "image_size": 224,
        "patch_size": 32,
        "num_channels": 3,
    },
    "siglip_vision_model": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
        "vision_use_head": True,
    },
    "idefics3_vision": {
        "hidden_size": 1152,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "image_size": 224,
        "patch_size": 32,
        "num_channels": 3,
    },
    "smolvlm_vision": {
        "hidden_size": 1152,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "image_size": 224,
        "patch_size": 32,
        "num_channels": 3,
    },
    "qwen2_vl": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 3584,
        "mlp_ratio": 4,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "qwen2_5_vl": {
        "depth": 32,
        "hidden_size": 3584,
        "intermediate_size": 3420,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 3584,
    },
    "mllama_vision_model": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_global_layers": 8,
        "image_size": 448,
        "patch_size": 14,
        "num_channels": 3,
        "max_num_tiles": 4,
        "vision_output_dim": 7680,
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    },
}


def text_config_of(text: Mapping[str, Any]) -> dict[str, Any]:
    """The text config with its defaults filled in (a copy)."""
    model_type = str(text.get("model_type", "llama"))
    if model_type not in TEXT_DEFAULTS:
        raise UserError(
            f"no parameter table for a '{model_type}' language model",
            hint=f"vlaunch knows {', '.join(TEXT_DEFAULTS)} (vlaunch_core/models/shape_parts.py)",
        )
    out = {**TEXT_DEFAULTS[model_type], **{k: v for k, v in text.items() if v is not None}}
    out["model_type"] = model_type
    heads = int(out["num_attention_heads"])
    if out["num_key_value_heads"] == _SAME_AS_HEADS:
        out["num_key_value_heads"] = heads
    out.setdefault("head_dim", int(out["hidden_size"]) // heads)
    return out


def _vision(vision: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    return {**VISION_DEFAULTS[model_type], **{k: v for k, v in vision.items() if v is not None}}


def _linear(name: str, out_f: int, in_f: int, bias: bool) -> Iterator[Entry]:
    yield f"{name}.weight", (out_f, in_f), "linear"
    if bias:
        yield f"{name}.bias", (out_f,), "linear"


def _norm(name: str, dim: int, bias: bool) -> Iterator[Entry]:
    yield f"{name}.weight", (dim,), "norm"
    if bias:
        yield f"{name}.bias", (dim,), "norm"


# --------------------------------------------------------------------------- text decoders


def _attention(prefix: str, t: Mapping[str, Any]) -> Iterator[Entry]:
    hidden, hd = int(t["hidden_size"]), int(t["head_dim"])
    q, kv = int(t["num_attention_heads"]) * hd, int(t["num_key_value_heads"]) * hd
    qkv_bias = bool(t.get("qkv_bias") or t.get("attention_bias", False))
    o_bias = bool(t.get("attention_bias", False))
    yield from _linear(f"{prefix}.q_proj", q, hidden, qkv_bias)
    yield from _linear(f"{prefix}.k_proj", kv, hidden, qkv_bias)
    yield from _linear(f"{prefix}.v_proj", kv, hidden, qkv_bias)
    yield from _linear(f"{prefix}.o_proj", hidden, q, o_bias)


def _mlp(prefix: str, t: Mapping[str, Any]) -> Iterator[Entry]:
    hidden, inter = int(t["hidden_size"]), int(t["intermediate_size"])
    bias = bool(t.get("mlp_bias", False))
    yield from _linear(f"{prefix}.gate_proj", inter, hidden, bias)
    yield from _linear(f"{prefix}.up_proj", inter, hidden, bias)
    yield from _linear(f"{prefix}.down_proj", hidden, inter, bias)


def decoder(t: Mapping[str, Any]) -> Iterator[Entry]:
    """A Llama-style decoder (`embed_tokens`, `layers.<i>`, `norm`), LM head excluded."""
    hidden = int(t["hidden_size"])
    yield "embed_tokens.weight", (int(t["vocab_size"]), hidden), "embedding"
    for i in range(int(t["num_hidden_layers"])):
        p = f"layers.{i}"
        yield from _attention(f"{p}.self_attn", t)
        yield from _mlp(f"{p}.mlp", t)
        yield from _norm(f"{p}.input_layernorm", hidden, False)
        yield from _norm(f"{p}.post_attention_layernorm", hidden, False)
        if t.get("sandwich_norms"):
            yield from _norm(f"{p}.pre_feedforward_layernorm", hidden, False)
            yield from _norm(f"{p}.post_feedforward_layernorm", hidden, False)
    yield from _norm("norm", hidden, False)


def mllama_text(t: Mapping[str, Any]) -> Iterator[Entry]:
    """Llama 3.2 Vision's decoder: self-attention layers and gated cross-attention layers."""
    hidden, hd = int(t["hidden_size"]), int(t["head_dim"])
    cross = set(t.get("cross_attention_layers") or [])
    yield "embed_tokens.weight", (int(t["vocab_size"]) + 8, hidden), "embedding"
    for i in range(int(t["num_hidden_layers"])):
        p = f"layers.{i}"
        if i in cross:
            yield f"{p}.cross_attn_attn_gate", (1,), "other"
            yield f"{p}.cross_attn_mlp_gate", (1,), "other"
            yield from _attention(f"{p}.cross_attn", t)
            yield from _norm(f"{p}.cross_attn.q_norm", hd, False)
            yield from _norm(f"{p}.cross_attn.k_norm", hd, False)
        else:
            yield from _attention(f"{p}.self_attn", t)
        yield from _mlp(f"{p}.mlp", t)
        yield from _norm(f"{p}.input_layernorm", hidden, False)
        yield from _norm(f"{p}.post_attention_layernorm", hidden, False)
    yield from _norm("norm", hidden, False)


# --------------------------------------------------------------------------- vision towers


@dataclass(frozen=True)
class Tower:
    entries: list[Entry]
    hidden: int
    """Width of the features the projector receives (per selected layer)."""


def _vit_layers(
    v: Mapping[str, Any], prefix: str = "encoder.layers", out_name: str = "out_proj"
) -> Iterator[Entry]:
    hidden, inter = int(v["hidden_size"]), int(v["intermediate_size"])
    for i in range(int(v["num_hidden_layers"])):
        p = f"{prefix}.{i}"
        for name in ("k_proj", "v_proj", "q_proj", out_name):
            yield from _linear(f"{p}.self_attn.{name}", hidden, hidden, True)
        yield from _norm(f"{p}.layer_norm1", hidden, True)
        yield from _linear(f"{p}.mlp.fc1", inter, hidden, True)
        yield from _linear(f"{p}.mlp.fc2", hidden, inter, True)
        yield from _norm(f"{p}.layer_norm2", hidden, True)


def _patches(v: Mapping[str, Any]) -> int:
    return (int(v["image_size"]) // int(v["patch_size"])) ** 2


def clip_vision(vision: Mapping[str, Any]) -> Tower:
    v = _vision(vision, "clip_vision_model")
    hidden, patch, channels = int(v["hidden_size"]), int(v["patch_size"]), int(v["num_channels"])
    entries: list[Entry] = [
        ("embeddings.class_embedding", (hidden,), "other"),
        ("embeddings.patch_embedding.weight", (hidden, channels, patch, patch), "conv"),
        ("embeddings.position_embedding.weight", (_patches(v) + 1, hidden), "embedding"),
        *_norm("pre_layrnorm", hidden, True),
        *_vit_layers(v),
        *_norm("post_layernorm", hidden, True),
    ]
    return Tower(entries, hidden)


def _siglip_like(v: Mapping[str, Any]) -> list[Entry]:
    hidden, patch, channels = int(v["hidden_size"]), int(v["patch_size"]), int(v["num_channels"])
    return [
        ("embeddings.patch_embedding.weight", (hidden, channels, patch, patch), "conv"),
        ("embeddings.patch_embedding.bias", (hidden,), "conv"),
        ("embeddings.position_embedding.weight", (_patches(v), hidden), "embedding"),
        *_vit_layers(v),
        *_norm("post_layernorm", hidden, True),
    ]


def siglip_vision(vision: Mapping[str, Any]) -> Tower:
    v = _vision(vision, "siglip_vision_model")
    hidden, inter = int(v["hidden_size"]), int(v["intermediate_size"])
    entries = _siglip_like(v)
    if v.get("vision_use_head", True):
        entries += [
            ("head.probe", (1, 1, hidden), "other"),
            ("head.attention.in_proj_weight", (3 * hidden, hidden), "other"),
            ("head.attention.in_proj_bias", (3 * hidden,), "other"),
            *_linear("head.attention.out_proj", hidden, hidden, True),
            *_norm("head.layernorm", hidden, True),
            *_linear("head.mlp.fc1", inter, hidden, True),
            *_linear("head.mlp.fc2", hidden, inter, True),
        ]
    return Tower(entries, hidden)


def idefics3_vision(vision: Mapping[str, Any], model_type: str) -> Tower:
    default = "smolvlm_vision" if model_type == "smolvlm" else "idefics3_vision"
    v = _vision(vision, str(vision.get("model_type", default)))
    return Tower(_siglip_like(v), int(v["hidden_size"]))


def qwen2_vision(vision: Mapping[str, Any]) -> Tower:
    v = _vision(vision, "qwen2_vl")
    e, out = int(v["embed_dim"]), int(v["hidden_size"])
    inter = int(e * float(v["mlp_ratio"]))
    merged = e * int(v["spatial_merge_size"]) ** 2
    p, t, c = int(v["patch_size"]), int(v["temporal_patch_size"]), int(v["in_channels"])
    entries: list[Entry] = [("patch_embed.proj.weight", (e, c, t, p, p), "conv")]
    for i in range(int(v["depth"])):
        b = f"blocks.{i}"
        entries += [
            *_norm(f"{b}.norm1", e, True),
            *_norm(f"{b}.norm2", e, True),
            *_linear(f"{b}.attn.qkv", 3 * e, e, True),
            *_linear(f"{b}.attn.proj", e, e, True),
            *_linear(f"{b}.mlp.fc1", inter, e, True),
            *_linear(f"{b}.mlp.fc2", e, inter, True),
        ]
    entries += [
        *_norm("merger.ln_q", e, True),
        *_linear("merger.mlp.0", merged, merged, True),
        *_linear("merger.mlp.2", out, merged, True),
    ]
    return Tower(entries, e)


def qwen2_5_vision(vision: Mapping[str, Any]) -> Tower:
    v = _vision(vision, "qwen2_5_vl")
    h, inter, out = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["out_hidden_size"])
    merged = h * int(v["spatial_merge_size"]) ** 2
    p, t, c = int(v["patch_size"]), int(v["temporal_patch_size"]), int(v["in_channels"])
    entries: list[Entry] = [("patch_embed.proj.weight", (h, c, t, p, p), "conv")]
    for i in range(int(v["depth"])):
        b = f"blocks.{i}"
        entries += [
            *_norm(f"{b}.norm1", h, False),
            *_norm(f"{b}.norm2", h, False),
            *_linear(f"{b}.attn.qkv", 3 * h, h, True),
            *_linear(f"{b}.attn.proj", h, h, True),
            *_linear(f"{b}.mlp.gate_proj", inter, h, True),
            *_linear(f"{b}.mlp.up_proj", inter, h, True),
            *_linear(f"{b}.mlp.down_proj", h, inter, True),
        ]
    entries += [
        *_norm("merger.ln_q", h, False),
        *_linear("merger.mlp.0", merged, merged, True),
        *_linear("merger.mlp.2", out, merged, True),
    ]
    return Tower(entries, h)


def mllama_vision(vision: Mapping[str, Any]) -> Tower:
    v = _vision(vision, "mllama_vision_model")
    hidden, inter = int(v["hidden_size"]), int(v["intermediate_size"])
    patch, channels = int(v["patch_size"]), int(v["num_channels"])
    tiles, positions = int(v["max_num_tiles"]), _patches(v) + 1
    ratios = len(v["supported_aspect_ratios"]) + 1
    entries: list[Entry] = [
        ("class_embedding", (hidden,), "other"),
        ("patch_embedding.weight", (hidden, channels, patch, patch), "conv"),
        ("gated_positional_embedding.gate", (1,), "other"),
        ("gated_positional_embedding.embedding", (positions, hidden), "other"),
        (
            "gated_positional_embedding.tile_embedding.weight",
            (ratios, tiles * positions * hidden),
            "embedding",
        ),
        ("pre_tile_positional_embedding.gate", (1,), "other"),
        ("pre_tile_positional_embedding.embedding.weight", (ratios, tiles * hidden), "embedding"),
        ("post_tile_positional_embedding.gate", (1,), "other"),
        ("post_tile_positional_embedding.embedding.weight", (ratios, tiles * hidden), "embedding"),
        *_norm("layernorm_pre", hidden, True),
        *_norm("layernorm_post", hidden, True),
    ]
    for name, n, gated in (
        ("transformer", int(v["num_hidden_layers"]), False),
        ("global_transformer", int(v["num_global_layers"]), True),
    ):
        for i in range(n):
            p = f"{name}.layers.{i}"
            if gated:
                entries += [(f"{p}.gate_attn", (1,), "other"), (f"{p}.gate_ffn", (1,), "other")]
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                entries += _linear(f"{p}.self_attn.{proj}", hidden, hidden, False)
            entries += [
                *_linear(f"{p}.mlp.fc1", inter, hidden, True),
                *_linear(f"{p}.mlp.fc2", hidden, inter, True),
                *_norm(f"{p}.input_layernorm", hidden, True),
                *_norm(f"{p}.post_attention_layernorm", hidden, True),
            ]
    return Tower(entries, int(v["vision_output_dim"]))
