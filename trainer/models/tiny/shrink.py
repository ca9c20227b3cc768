"""A tiny config of any architecture: its default config, shrunk by generic rules.

`tiny_config(model_type)` starts from `AutoConfig.for_model(model_type)` (every sub-config
included) and rewrites sizes by key name, the same way at every level: widths become 64,
feed-forward sizes 128, 4 heads of 16 dims (key/value heads keep their ratio), two layers,
4 experts with top-2 routing, a vocabulary of the tiny tokenizer's size and 32 px images in
8 px patches. Lists and dicts indexed by layer keep one representative of each kind of
layer (Gemma 3's sliding and full attention, Qwen3-VL's deepstack layer, Mllama's
cross-attention layer). Every token id is set to the tiny tokenizer's. What the rules get
wrong for an architecture is fixed in `overrides.py`, with the reason.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any

from trainer.models.tiny.overrides import override
from trainer.models.tiny.tokenizer import (
    ALWAYS_SET,
    TinyVocab,
    derive_vocab,
    iter_token_keys,
    token_key_name,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

WIDTH = 64
FFN = 128
HEADS = 4
HEAD_DIM = 16
LAYERS = 2
"""At least this many layers; more only where the layer kinds need them (at most 4)."""
MAX_LAYERS = 4
EXPERTS = 4
TOP_K = 2
IMAGE_SIZE = 32
PATCH_SIZE = 8
MAX_POSITIONS = 4096
TEXT_INIT_RANGE = 0.1
"""Text weights use std 0.1: with 0.02 a frozen random LM head cannot produce a confident
token (logits stay below ~2.5), so LoRA could never fit a tiny model."""

WIDTH_KEYS = frozenset(
    {
        "hidden_size", "d_model", "embed_dim", "n_embd", "out_hidden_size", "text_hidden_size",
        "vision_hidden_size", "projection_dim", "projector_hidden_size", "projector_input_dim",
        "projector_output_dim", "vision_output_dim", "output_dim", "word_embed_proj_dim",
        "encoder_hidden_size", "image_text_hidden_size", "decoder_hidden_size",
        "image_token_embed_dim", "projection_hidden_size", "patch_embed_hidden_size",
        "pooler_output_size", "adapter_in_dim", "adapter_out_dim", "adapter_input_size",
        "moe_hidden_size", "merged_hidden_size", "hidden_dim", "vision_embed_dim",
        "text_embed_dim", "hidden_size_per_layer_input", "ple_embed_dim",
    }
)  # fmt: skip
FFN_KEYS = frozenset(
    {
        "intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff",
        "moe_intermediate_size", "shared_expert_intermediate_size", "intermediate_size_mlp",
        "shared_experts_intermediate_size", "dense_intermediate_size", "shared_intermediate_size",
        "mlp_dim", "projection_intermediate_size", "alignment_intermediate_size",
        "moe_shared_expert_intermediate_size", "decoder_intermediate_size", "share_expert_dim",
        "projection_hidden_dim",
    }
)  # fmt: skip
HEAD_KEYS = frozenset(
    {
        "num_attention_heads", "num_heads", "attention_heads", "encoder_attention_heads",
        "decoder_attention_heads", "conf_num_attention_heads", "resampler_n_heads",
        "swa_num_attention_heads", "num_sliding_attention_heads", "index_n_heads",
        "resampler_heads", "linear_num_heads", "linear_num_key_heads",
    }
)  # fmt: skip
KV_HEAD_KEYS = {
    "num_key_value_heads": ("num_attention_heads", "num_heads"),
    "swa_num_key_value_heads": ("swa_num_attention_heads",),
    "linear_num_value_heads": ("linear_num_key_heads",),
}
"""Key/value heads keep their ratio to the query heads they are grouped with."""
HEAD_DIM_KEYS = frozenset(
    {
        "head_dim", "d_kv", "linear_key_head_dim", "linear_value_head_dim", "index_head_dim",
        "resampler_head_dim", "swa_head_dim", "mamba_head_dim", "qk_head_dim",
        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "linear_head_dim", "rotary_dim",
        "query_pre_attn_scalar", "resampler_dim_head", "global_head_dim",
    }
)  # fmt: skip
RANK_KEYS = frozenset({"kv_lora_rank", "q_lora_rank", "laurel_rank", "hc_lowrank"})
LAYER_KEYS = (
    "num_hidden_layers", "depth", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
    "num_decoder_layers", "conf_num_hidden_layers", "layers",
)  # fmt: skip
"""Layer counts; the first one present at a level owns the per-layer lists of that level."""
ONE_LAYER_KEYS = frozenset({"num_global_layers", "resampler_depth", "aligner_num_add_layers"})
EXPERT_KEYS = frozenset({"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"})
TOP_K_KEYS = frozenset({"num_experts_per_tok", "moe_k", "moe_topk", "top_k_experts"})
AT_MOST_ONE_KEYS = frozenset(
    {"n_shared_experts", "moe_num_shared_experts", "n_group", "topk_group", "first_k_dense_replace"}
)
TOKENS_PER_IMAGE_KEYS = frozenset({"mm_tokens_per_image", "vision_soft_tokens_per_image"})
LAYER_INDEX_HINTS = ("layer", "index", "indexes", "idxs", "indices", "ids")
"""A list of ints whose key names one of these holds layer indices (`fullatt_block_indexes`)."""
NOT_SUBCONFIGS = frozenset(
    {"rope_parameters", "rope_scaling", "id2label", "label2id", "quantization_config",
     "auto_map", "task_specific_params"}
)  # fmt: skip


def tiny_config(model_type: str, vocab: TinyVocab | None = None) -> PretrainedConfig:
    """The tiny config of `model_type`, token ids those of `vocab` (derived when None)."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    vocab = vocab if vocab is not None else derive_vocab(model_type, default)
    d = tiny_config_dict(default, vocab)
    for path, value in override(model_type).get("config", {}).items():
        _set_path(d, path, value)
    config = AutoConfig.for_model(**d)
    _fit_mrope(config)
    return config


def _fit_mrope(config: PretrainedConfig) -> None:
    """M-RoPE sections that sum to the tiny model's rotary frequencies.

    Most M-RoPE configs leave `mrope_section` out and the modeling code defaults it for the
    real head size (Qwen2-VL: [16, 24, 24]); the section list the code uses and the number
    of frequencies are read off the rotary module of the tiny model built on the meta device.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    fixes = {}
    for module in model.modules():
        sections, inv_freq = (
            getattr(module, "mrope_section", None),
            getattr(module, "inv_freq", None),
        )
        if (
            isinstance(sections, list | tuple)
            and inv_freq is not None
            and sum(sections) != inv_freq.shape[-1]
        ):
            fixes[module.config.model_type] = split_evenly(inv_freq.shape[-1], list(sections))
    for level in _config_tree(config):
        if level.model_type in fixes:
            rope = dict(level.rope_parameters or {})
            rope["mrope_section"] = fixes[level.model_type]
            level.rope_parameters = rope


def _config_tree(config: PretrainedConfig) -> list[PretrainedConfig]:
    from transformers import PretrainedConfig

    out = [config]
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            out += _config_tree(value)
    return out


def tiny_config_dict(default: PretrainedConfig, vocab: TinyVocab) -> dict[str, Any]:
    """The shrunk config as a dict (`config.json`), from the default config object."""
    _fill_missing_subconfigs(default)
    d = default.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures"):
        d.pop(key, None)
    _name_token_keys(default, d)
    _shrink(d)
    _shrink_text(d, vocab, is_text=True)
    _set_token_ids(d, vocab)
    return d


TEXT_LEVELS = frozenset({"text_config", "encoder", "decoder", "llm_config", "vlm_config"})
"""Sub-configs of a text model (or holding one): the tokenizer's vocabulary is theirs."""
OTHER_VOCAB = 256
"""Vocabularies of non-text parts (Ovis's visual vocabulary, VQ codebooks) shrink to this."""


def _shrink_text(d: dict[str, Any], vocab: TinyVocab, is_text: bool) -> None:
    """Vocabulary, init range and positions of the text model(s); other vocabularies small."""
    if isinstance(d.get("vocab_size"), int):
        d["vocab_size"] = vocab.size if is_text else min(d["vocab_size"], OTHER_VOCAB)
    if is_text:
        for key in ("vocab_size_per_layer_input", "unpadded_vocab_size"):
            if isinstance(d.get(key), int):
                d[key] = vocab.size
        if "initializer_range" in d:
            d["initializer_range"] = TEXT_INIT_RANGE
        if isinstance(d.get("max_position_embeddings"), int):
            d["max_position_embeddings"] = MAX_POSITIONS
    for key, value in d.items():
        if _is_subconfig(key, value):
            _shrink_text(value, vocab, is_text=key in TEXT_LEVELS)


def _name_token_keys(config: PretrainedConfig, d: dict[str, Any]) -> None:
    """Token ids stored under another name (Molmo2's `image_patch_id`, which its
    `attribute_map` calls `image_token_id`) are written under the token-id name."""
    from transformers import PretrainedConfig

    for alias, real in getattr(config, "attribute_map", {}).items():
        if alias.endswith(("_token_id", "_token_index")) and real in d and alias not in d:
            d[alias] = d.pop(real)
    for key, value in vars(config).items():
        if isinstance(value, PretrainedConfig) and isinstance(d.get(key), dict):
            _name_token_keys(value, d[key])


def _fill_missing_subconfigs(config: PretrainedConfig) -> None:
    """Sub-configs left out of the defaults (Gemma 4's vision tower) get their defaults;
    audio stays out where the default has none: the tiny models are image-text models."""
    for name, cls in getattr(config, "sub_configs", {}).items():
        if getattr(config, name, None) is None and "audio" not in name:
            try:
                setattr(config, name, cls())
            except Exception:  # AutoConfig: no default to build
                logger.debug("no default for %s.%s", config.model_type, name)


def _is_subconfig(key: str, value: Any) -> bool:
    return (
        isinstance(value, dict)
        and key not in NOT_SUBCONFIGS
        and ("model_type" in value or key.endswith("_config") or key in {"encoder", "decoder"})
    )


def _shrink(d: dict[str, Any]) -> None:
    """Shrink one config level in place, then its sub-configs."""
    for key, value in list(d.items()):
        if _is_subconfig(key, value):
            _shrink(value)
    _shrink_layers(d)
    rotary = _rotary_fraction(d)
    heads_before = {k: d.get(k) for keys in KV_HEAD_KEYS.values() for k in keys}
    for key, value in list(d.items()):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if key in WIDTH_KEYS:
            d[key] = WIDTH
        elif key in FFN_KEYS:
            d[key] = FFN
        elif key in HEAD_KEYS:
            d[key] = min(value, HEADS) if key == "linear_num_key_heads" else HEADS
        elif key in HEAD_DIM_KEYS and value > 0:
            d[key] = int(HEAD_DIM / rotary) if key in ("head_dim", "global_head_dim") else HEAD_DIM
        elif key in RANK_KEYS and value > 0:
            d[key] = 2 * HEAD_DIM
        elif key in ONE_LAYER_KEYS:
            d[key] = 1
        elif key in EXPERT_KEYS:
            d[key] = min(value, EXPERTS)
        elif key in TOP_K_KEYS:
            d[key] = min(value, TOP_K)
        elif key in AT_MOST_ONE_KEYS:
            d[key] = min(value, 1)
        elif key in {"image_size", "img_size"} and value > PATCH_SIZE:
            d[key] = IMAGE_SIZE
        elif key == "patch_size" and value > PATCH_SIZE:
            d[key] = PATCH_SIZE
    for key in ("image_size", "patch_size"):  # InternVL's [448, 448], [14, 14]
        value = d.get(key)
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) for v in value)
        ):
            d[key] = [IMAGE_SIZE if key == "image_size" else PATCH_SIZE] * 2
    for kv_key, q_keys in KV_HEAD_KEYS.items():
        q_key = next((k for k in q_keys if isinstance(heads_before.get(k), int)), None)
        kv, q = d.get(kv_key), heads_before.get(q_key or "")
        if q_key is not None and isinstance(kv, int) and isinstance(q, int) and q > 0:
            d[kv_key] = _grouped(kv, q, d[q_key])
    grid = IMAGE_SIZE // PATCH_SIZE
    if isinstance(d.get("image_grid_pinpoints"), list) and d["image_grid_pinpoints"]:
        d["image_grid_pinpoints"] = _pinpoints(d["image_grid_pinpoints"])
    for key in ("num_patches", "num_position_embeddings"):
        if isinstance(d.get(key), int) and math.isqrt(d[key]) ** 2 == d[key]:
            d[key] = grid * grid
    if isinstance(d.get("base_channels"), int):  # a VQ-VAE (Janus, Chameleon, Emu3 images)
        d.update(base_channels=32, num_res_blocks=1)
        if isinstance(d.get("channel_multiplier"), list):  # same levels, 32 channels each
            d["channel_multiplier"] = [1] * len(d["channel_multiplier"])
        for key in ("latent_channels", "num_embeddings"):
            if isinstance(d.get(key), int):
                d[key] = min(d[key], 32 if key == "latent_channels" else OTHER_VOCAB)
    if isinstance(d.get("position_embedding_size"), int):  # Gemma 4: positions per axis
        d["position_embedding_size"] = 8 * grid
    for key in TOKENS_PER_IMAGE_KEYS:  # a pooled grid: a quarter of the patches
        if isinstance(d.get(key), int):
            d[key] = grid * grid // 4
    _shrink_rope(d)


def _pinpoints(pinpoints: list[list[int]]) -> list[list[int]]:
    """LLaVA-NeXT's tile layouts, in tiny tiles, up to 2x2."""
    base = min(min(p) for p in pinpoints)
    out = []
    for h, w in pinpoints:
        tiles = [h // base, w // base]
        if max(tiles) <= 2 and [t * IMAGE_SIZE for t in tiles] not in out:
            out.append([t * IMAGE_SIZE for t in tiles])
    return out


def _rotary_fraction(d: dict[str, Any]) -> float:
    """The smallest fraction of a head that is rotated (`partial_rotary_factor`): heads
    grow so that the rotated part keeps 16 dims (M-RoPE splits it into three sections)."""
    rope = d.get("rope_parameters") or {}
    levels = [d, rope, *(v for v in rope.values() if isinstance(v, dict))]
    found = [lv["partial_rotary_factor"] for lv in levels if lv.get("partial_rotary_factor")]
    return min([1.0, *found])


def _grouped(kv: int, q_before: int, q_after: int) -> int:
    """Key/value heads for `q_after` query heads, keeping the group size where possible."""
    if kv >= q_before:
        return q_after * (kv // q_before)
    groups = max(1, q_after * kv // q_before)
    while q_after % groups:
        groups -= 1
    return groups


def _shrink_rope(d: dict[str, Any]) -> None:
    """Explicit M-RoPE sections sum to half the rotary dims of the new head size (configs
    that validate it refuse anything else; `_fit_mrope` covers the implicit ones)."""
    rope = d.get("rope_parameters")
    sections = [r for r in (rope, *(rope or {}).values()) if isinstance(r, dict)] if rope else []
    head_dim = d.get("head_dim") or (
        d["hidden_size"] // d["num_attention_heads"]
        if isinstance(d.get("hidden_size"), int) and d.get("num_attention_heads")
        else None
    )
    for r in sections:
        mrope = r.get("mrope_section")
        if isinstance(mrope, list) and head_dim:
            half = int(head_dim * r.get("partial_rotary_factor", 1.0)) // 2
            r["mrope_section"] = split_evenly(half, mrope)


def split_evenly(total: int, like: list[int]) -> list[int]:
    """`total` split into len(like) positive parts in the proportions of `like`."""
    n = len(like)
    if total < n:
        raise ValueError(f"cannot split {total} rotary frequencies into {n} M-RoPE sections")
    parts = [max(1, total * x // sum(like)) for x in like]
    i = 0
    while sum(parts) != total:
        step = 1 if sum(parts) < total else -1
        if parts[i % n] + step >= 1:
            parts[i % n] += step
        i += 1
    return parts


def _shrink_layers(d: dict[str, Any]) -> None:
    """Fewer layers; per-layer lists and layer-index lists keep one layer of each kind."""
    key = next((k for k in LAYER_KEYS if isinstance(d.get(k), int) and d[k] > 0), None)
    for other in LAYER_KEYS:
        if other != key and isinstance(d.get(other), int) and d[other] > LAYERS:
            d[other] = LAYERS
    if key is None:
        return
    n_old = d[key]
    per_layer = [
        k
        for k, v in d.items()
        if isinstance(v, list) and len(v) == n_old and k != "vision_feature_layer"
    ]
    index_lists = [
        k
        for k, v in d.items()
        if isinstance(v, list | tuple)
        and k not in per_layer
        and any(h in k for h in LAYER_INDEX_HINTS)
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_old for i in v)
    ]
    index_dicts = [
        k
        for k, v in d.items()
        if isinstance(v, dict) and v and all(isinstance(i, str) and i.isdigit() for i in v)
    ]
    kinds: dict[tuple[Any, ...], int] = {}
    for i in range(n_old):
        kind = (
            *(_hashable(d[k][i]) for k in per_layer),
            *(i in d[k] for k in index_lists),
            *(str(i).zfill(len(next(iter(d[k])))) in d[k] for k in index_dicts),
        )
        kinds.setdefault(kind, i)
    keep = sorted(kinds.values())[:MAX_LAYERS]
    for i in range(n_old):
        if len(keep) >= min(LAYERS, n_old):
            break
        if i not in keep:
            keep = sorted([*keep, i])
    d[key] = len(keep)
    new = {old: new for new, old in enumerate(keep)}
    for k in per_layer:
        d[k] = [d[k][i] for i in keep]
    for k in index_lists:
        d[k] = [new[i] for i in d[k] if i in new]
    for k in index_dicts:
        width = len(next(iter(d[k])))
        d[k] = {str(new[int(i)]).zfill(width): v for i, v in d[k].items() if int(i) in new}
        for v in d[k].values():
            if isinstance(v, dict):
                _shrink(v)


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, list | dict) else v


def _set_token_ids(d: dict[str, Any], vocab: TinyVocab) -> None:
    """Every token id of the config, the tiny tokenizer's. An id the default config leaves
    unset is set where the processor has that token (MiniCPM-V's `image_token_id` defaults
    to None, which would make the model skip its images)."""
    for key, path in iter_token_keys(d, unset=True):
        level = d
        for p in path:
            level = level[p]
        name = token_key_name(key)
        token = vocab.token_for(name)
        if token is None and (level[key] is not None or key in ALWAYS_SET):
            token = f"<|{name}|>"
        if token not in vocab.specials:
            continue
        value = vocab.token_id(token)
        level[key] = [value] if isinstance(level[key], list) else value


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d[p]
    d[last] = copy.deepcopy(value)
