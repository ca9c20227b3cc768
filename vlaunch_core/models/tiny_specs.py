"""What the tiny model of each family is made of (torch-free data).

A tiny model is a real transformers architecture with toy sizes: a byte-level vocabulary (256
byte tokens plus the family's special tokens, so any text tokenises), a vision tower of a few
layers on 32-64 px images, and a decoder of two layers. They are the fixtures of the test
suite and the demo model (`tiny:llava` learns the synthetic shapes task on a CPU in minutes).
`trainer/models/tiny.py` turns these specs into model folders.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from vlaunch_core.errors import unknown_name
from vlaunch_core.models import chat_templates

BYTE_TOKENS = 256
"""Every byte is one token (GPT-2's byte-to-unicode alphabet); there are no merges."""


@dataclass(frozen=True)
class TinySpec:
    """One family's tiny model: config, vocabulary, chat template and processor settings."""

    family: str
    config: dict[str, Any]
    """The model config; `{token}` string values of `*_token_id(x)` keys are resolved to ids."""
    specials: tuple[str, ...]
    """Special tokens, ids 0..n-1 in this order; the 256 byte tokens follow."""
    bos: str
    eos: str
    pad: str
    chat_template: str
    processor: dict[str, Any]
    """`class`: the transformers processor class; `image_processor` and (families that have
    one) `video_processor`: (class name, kwargs); other keys are passed to the processor."""
    add_bos: bool = False
    """The tokenizer itself prepends `bos` (Llama-2 style); otherwise the template does."""
    extra_special_tokens: dict[str, str] = field(default_factory=dict)
    """Named special tokens exposed as tokenizer attributes (`tokenizer.image_token`)."""
    vocab_size_offset: int = 0
    """The config's vocab_size = tokenizer size + this (Mllama's image token sits past it)."""
    init_values: dict[str, float] = field(default_factory=dict)
    """Parameters (name regex -> value) set after random init. Mllama's gates (cross-attention,
    tile positions) start at 0, which would leave parts of a random model without gradients."""

    @property
    def vocab_len(self) -> int:
        return len(self.specials) + BYTE_TOKENS

    def token_id(self, token: str) -> int:
        return self.specials.index(token)


def _vision_clip(layers: int = 2) -> dict[str, Any]:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": 64,
    }


def _vision_siglip(model_type: str) -> dict[str, Any]:
    return {
        "model_type": model_type,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }


def _text(model_type: str, hidden: int = 64, **extra: Any) -> dict[str, Any]:
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        # The default 0.02 caps the logits a frozen random LM head can reach at ~2.5 (loss
        # floor ~3 nats): LoRA could never make a tiny model confident. 0.1 lifts that cap.
        "initializer_range": 0.1,
        **extra,
    }


_LLAMA2_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>")
_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_IDEFICS3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<pad>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")
_LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)

_QWEN_IMAGE = (
    "Qwen2VLImageProcessorPil",
    {
        "patch_size": 4,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "min_pixels": 16 * 16,
        "max_pixels": 32 * 32,
    },
)
_QWEN_VIDEO = (
    "Qwen2VLVideoProcessor",
    {
        "patch_size": 4,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "size": {"shortest_edge": 16 * 16, "longest_edge": 32 * 32},
    },
)


def _llava_specs() -> list[TinySpec]:
    llava_proc = {
        "patch_size": 8,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,
    }
    next_image = (
        "LlavaNextImageProcessorPil",
        {
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
            "image_grid_pinpoints": [[32, 32], [32, 64], [64, 32], [64, 64]],
        },
    )
    common = {
        "bos": "<s>",
        "eos": "</s>",
        "pad": "<pad>",
        "specials": _LLAMA2_SPECIALS,
        "chat_template": chat_templates.VICUNA,
        "add_bos": True,
    }
    return [
        TinySpec(
            family="llava",
            config={
                "model_type": "llava",
                "vision_config": _vision_clip(),
                # Bigger than the other tiny decoders: the demo trains this one.
                "text_config": _text("llama", hidden=128),
                "image_token_index": "<image>",
                "image_seq_length": 16,
                "vision_feature_layer": -1,
                "vision_feature_select_strategy": "default",
            },
            processor={
                "class": "LlavaProcessor",
                **llava_proc,
                "image_processor": (
                    "CLIPImageProcessorPil",
                    {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
                ),
            },
            extra_special_tokens={"image_token": "<image>"},
            **common,  # type: ignore[arg-type]
        ),
        TinySpec(
            family="llava_next",
            config={
                "model_type": "llava_next",
                "vision_config": _vision_clip(layers=3),
                "text_config": _text("llama"),
                "image_token_index": "<image>",
                "image_grid_pinpoints": next_image[1]["image_grid_pinpoints"],
                # -2 as in the released checkpoints: the last vision layer is unused.
                "vision_feature_layer": -2,
                "vision_feature_select_strategy": "default",
            },
            processor={"class": "LlavaNextProcessor", **llava_proc, "image_processor": next_image},
            extra_special_tokens={"image_token": "<image>"},
            **common,  # type: ignore[arg-type]
        ),
        TinySpec(
            family="llava_next_video",
            config={
                "model_type": "llava_next_video",
                "vision_config": _vision_clip(),
                "text_config": _text("llama"),
                "image_token_index": "<image>",
                "video_token_index": "<video>",
                "image_grid_pinpoints": [[32, 32], [64, 64]],
                "spatial_pool_stride": 2,
                "vision_feature_layer": -1,
                "vision_feature_select_strategy": "default",
            },
            processor={
                "class": "LlavaNextVideoProcessor",
                **llava_proc,
                "image_processor": (
                    next_image[0],
                    {**next_image[1], "image_grid_pinpoints": [[32, 32], [64, 64]]},
                ),
                "video_processor": (
                    "LlavaNextVideoVideoProcessor",
                    {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
                ),
            },
            extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
            **common,  # type: ignore[arg-type]
        ),
    ]


def _qwen_specs() -> list[TinySpec]:
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    common = {
        "bos": "<|endoftext|>",
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "specials": _QWEN_SPECIALS,
        "chat_template": chat_templates.CHATML_QWEN,
    }
    return [
        TinySpec(
            family="qwen2_vl",
            config={
                "model_type": "qwen2_vl",
                **ids,
                "text_config": _text("qwen2_vl_text", rope_parameters=rope),
                "vision_config": {
                    "depth": 2,
                    "embed_dim": 32,
                    "hidden_size": 64,
                    "num_heads": 2,
                    "mlp_ratio": 2,
                    "patch_size": 4,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                },
            },
            processor={
                "class": "Qwen2VLProcessor",
                "image_processor": _QWEN_IMAGE,
                "video_processor": _QWEN_VIDEO,
            },
            **common,  # type: ignore[arg-type]
        ),
        TinySpec(
            family="qwen2_5_vl",
            config={
                "model_type": "qwen2_5_vl",
                **ids,
                "text_config": _text("qwen2_5_vl_text", rope_parameters=rope),
                "vision_config": {
                    "depth": 2,
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "out_hidden_size": 64,
                    "num_heads": 2,
                    "patch_size": 4,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                    "window_size": 16,
                    "fullatt_block_indexes": [1],
                },
            },
            processor={
                "class": "Qwen2_5_VLProcessor",
                "image_processor": _QWEN_IMAGE,
                "video_processor": _QWEN_VIDEO,
            },
            **common,  # type: ignore[arg-type]
        ),
    ]


def _other_specs() -> list[TinySpec]:
    return [
        TinySpec(
            family="idefics3",
            config={
                "model_type": "idefics3",
                "image_token_id": "<image>",
                "scale_factor": 2,
                "text_config": _text("llama"),
                "vision_config": {**_vision_siglip("idefics3_vision"), "image_size": 32},
            },
            specials=_IDEFICS3_SPECIALS,
            bos="<|begin_of_text|>",
            eos="<end_of_utterance>",
            pad="<pad>",
            chat_template=chat_templates.IDEFICS3,
            processor={
                "class": "Idefics3Processor",
                "image_seq_len": 4,
                "image_processor": (
                    "Idefics3ImageProcessorPil",
                    {
                        "size": {"longest_edge": 64},
                        "max_image_size": {"longest_edge": 32},
                        "do_image_splitting": True,
                    },
                ),
            },
        ),
        TinySpec(
            family="paligemma",
            config={
                "model_type": "paligemma",
                "image_token_index": "<image>",
                "projection_dim": 64,
                "hidden_size": 64,
                # Gemma ties the LM head to the embeddings, as the released checkpoints do.
                "text_config": _text(
                    "gemma",
                    head_dim=16,
                    hidden_activation="gelu_pytorch_tanh",
                    tie_word_embeddings=True,
                ),
                "vision_config": {
                    **_vision_siglip("siglip_vision_model"),
                    "vision_use_head": False,
                    "projection_dim": 64,
                },
            },
            specials=_GEMMA_SPECIALS,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            chat_template=chat_templates.PALIGEMMA,
            processor={
                "class": "PaliGemmaProcessor",
                "image_processor": (
                    "SiglipImageProcessorPil",
                    {"size": {"height": 32, "width": 32}, "image_seq_length": 16},
                ),
            },
            extra_special_tokens={"image_token": "<image>"},
        ),
        TinySpec(
            family="mllama",
            config={
                "model_type": "mllama",
                "image_token_index": "<|image|>",
                "text_config": {
                    **_text("mllama_text_model", num_hidden_layers=3),
                    "cross_attention_layers": [1],
                    "rope_theta": 10000.0,
                    "bos_token_id": "<|begin_of_text|>",
                    "eos_token_id": "<|eot_id|>",
                    "pad_token_id": "<|finetune_right_pad_id|>",
                },
                "vision_config": {
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 2,
                    "num_global_layers": 1,
                    "attention_heads": 2,
                    "image_size": 32,
                    "patch_size": 8,
                    "max_num_tiles": 2,
                    "intermediate_layers_indices": [0],
                    "vision_output_dim": 64,
                    "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
                },
            },
            specials=(*_LLAMA3_SPECIALS, "<|image|>"),
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad="<|finetune_right_pad_id|>",
            chat_template=chat_templates.LLAMA3,
            processor={
                "class": "MllamaProcessor",
                "image_processor": (
                    "MllamaImageProcessorPil",
                    {"size": {"height": 32, "width": 32}, "max_image_tiles": 2},
                ),
            },
            # Like Llama 3.2 Vision: <|image|> is the last token and outside the LM head.
            vocab_size_offset=-1,
            init_values={
                r".*\.cross_attn_(attn|mlp)_gate": 0.5,
                r".*_positional_embedding\.gate": 0.5,
            },
        ),
    ]


TINY_SPECS: dict[str, TinySpec] = {
    s.family: s for s in (*_llava_specs(), *_qwen_specs(), *_other_specs())
}


def get_tiny_spec(family: str) -> TinySpec:
    if family not in TINY_SPECS:
        raise unknown_name("tiny model family", family, TINY_SPECS)
    return TINY_SPECS[family]


def tiny_config_dict(family: str) -> dict[str, Any]:
    """The config dict of `tiny:<type>` (as `config.json` would hold it; no torch needed)."""
    spec = get_tiny_spec(family)
    config = _resolve_tokens(copy.deepcopy(spec.config), spec)
    text = config.get("text_config", config)
    text["vocab_size"] = spec.vocab_len + spec.vocab_size_offset
    for key, token in (
        ("bos_token_id", spec.bos),
        ("eos_token_id", spec.eos),
        ("pad_token_id", spec.pad),
    ):
        text.setdefault(key, spec.token_id(token))
    if "vocab_size" in config or config["model_type"] == "paligemma":
        config["vocab_size"] = text["vocab_size"]
    config["tie_word_embeddings"] = text["tie_word_embeddings"]
    return config


def _resolve_tokens(value: Any, spec: TinySpec) -> Any:
    """Replace `"<token>"` strings under `*_token_id` / `*_token_index` keys by their ids."""
    if isinstance(value, dict):
        return {
            k: spec.token_id(v)
            if isinstance(v, str) and k.endswith(("_id", "_index"))
            else _resolve_tokens(v, spec)
            for k, v in value.items()
        }
    return value
