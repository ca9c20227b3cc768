"""VLM family registry (torch-free metadata).

A `Family` says how to load a VLM with transformers and where its parts live: parameter-name
prefixes of the vision tower, projector and language model (as `model.named_parameters()` of
the `*ForConditionalGeneration` class names them in transformers 5), its decoder-layer classes
(FSDP wrapping), default LoRA targets scoped to one module (an unscoped `q_proj` would also hit
the vision tower), its image/video tokens and processor quirks. Adding a family is one entry
here plus a tiny spec in `tiny_specs.py` (docs/models.md, "Add a model family").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vlaunch_core.errors import UserError, did_you_mean

Module = Literal["vision_tower", "projector", "language_model", "other"]
MODULES: tuple[Module, ...] = ("vision_tower", "projector", "language_model")

#: Decoder layer class of each text backbone (config `model_type`), for FSDP wrapping.
TEXT_LAYER_CLASSES: dict[str, tuple[str, ...]] = {
    "llama": ("LlamaDecoderLayer",),
    "mistral": ("MistralDecoderLayer",),
    "qwen2": ("Qwen2DecoderLayer",),
    "granite": ("GraniteDecoderLayer",),
    "gemma": ("GemmaDecoderLayer",),
    "gemma2": ("Gemma2DecoderLayer",),
    "qwen2_vl_text": ("Qwen2VLDecoderLayer",),
    "qwen2_5_vl_text": ("Qwen2_5_VLDecoderLayer",),
    "mllama_text_model": ("MllamaSelfAttentionDecoderLayer", "MllamaCrossAttentionDecoderLayer"),
}
#: Encoder layer class of each vision tower (vision config `model_type`).
VISION_LAYER_CLASSES: dict[str, tuple[str, ...]] = {
    "clip_vision_model": ("CLIPEncoderLayer",),
    "siglip_vision_model": ("SiglipEncoderLayer",),
    "idefics3_vision": ("Idefics3EncoderLayer",),
    "smolvlm_vision": ("SmolVLMEncoderLayer",),
    "qwen2_vl": ("Qwen2VLVisionBlock",),
    "qwen2_5_vl": ("Qwen2_5_VLVisionBlock",),
    "mllama_vision_model": ("MllamaVisionEncoderLayer",),
}
#: Default text backbone / vision tower `model_type` when a config.json omits it.
_DEFAULT_TEXT_TYPE = {
    "qwen2_vl": "qwen2_vl_text",
    "qwen2_5_vl": "qwen2_5_vl_text",
    "mllama": "mllama_text_model",
    "paligemma": "gemma",
    "idefics3": "llama",
    "smolvlm": "llama",
}
_DEFAULT_VISION_TYPE = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "mllama": "mllama_vision_model",
    "paligemma": "siglip_vision_model",
    "idefics3": "idefics3_vision",
    "smolvlm": "smolvlm_vision",
}

_LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_VIT_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class Family:
    """How one VLM family is loaded and where its parts live."""

    name: str
    title: str
    model_types: tuple[str, ...]
    """Config `model_type` values of this family (the first is the canonical one)."""
    model_class: str
    """The transformers class (loaded through `AutoModelForImageTextToText`)."""
    vision_tower: tuple[str, ...]
    """Parameter-name prefixes of the vision tower."""
    projector: tuple[str, ...]
    """Parameter-name prefixes of the multimodal projector (checked before the vision tower:
    Qwen-VL's merger lives inside `model.visual`)."""
    language_model: tuple[str, ...]
    """Parameter-name prefixes of the language model (the LM head included)."""
    llm_layers: str
    """Regex of the language model's decoder-layer module names (`...layers.<i>`)."""
    vision_layers: str
    """Regex of the vision tower's encoder-layer module names."""
    llm_lora_modules: tuple[str, ...] = _LLM_LINEARS
    """Default LoRA target Linear names inside the language model's layers."""
    vision_lora_modules: tuple[str, ...] = _VIT_LINEARS
    """Default LoRA target Linear names inside the vision tower's layers."""
    image_token: str = "<image>"
    video_token: str | None = None
    supports_video: bool = False
    supports_multi_image: bool = False
    examples: tuple[str, ...] = ()
    """Well-known checkpoints of this family."""
    quirks: tuple[str, ...] = ()
    """Processor and model quirks worth knowing (shown by `vlaunch models`, docs/models.md)."""
    unused: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = field(
        default=None, compare=False, repr=False
    )
    """Parameter-name prefixes the forward pass never uses for this config (kept frozen:
    trainable parameters without gradients break DDP and waste optimizer state)."""

    @property
    def default_lora_targets(self) -> str:
        """The language-model LoRA target regex (peft `target_modules`, full match)."""
        return lora_regex(self.llm_layers, self.llm_lora_modules)

    @property
    def default_vision_lora_targets(self) -> str:
        """The vision-tower LoRA target regex."""
        return lora_regex(self.vision_layers, self.vision_lora_modules)

    def module_of(self, param_name: str) -> Module:
        """Which part a parameter (or module) name belongs to."""
        name = canonical_name(param_name)
        for module in ("projector", "vision_tower", "language_model"):
            if any(_under(name, p) for p in getattr(self, module)):
                return module
        return "other"

    def unused_prefixes(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        return self.unused(config) if self.unused is not None else ()

    def layer_classes(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """Decoder and vision-encoder layer class names (FSDP `transformer_layer_cls`)."""
        model_type = str(config.get("model_type", self.model_types[0]))
        text = config.get("text_config") or {}
        vision = config.get("vision_config") or {}
        text_type = text.get("model_type", _DEFAULT_TEXT_TYPE.get(model_type, "llama"))
        vision_type = vision.get(
            "model_type", _DEFAULT_VISION_TYPE.get(model_type, "clip_vision_model")
        )
        return TEXT_LAYER_CLASSES.get(text_type, ()) + VISION_LAYER_CLASSES.get(vision_type, ())


def lora_regex(layers: str, linears: tuple[str, ...]) -> str:
    """`<layers>.<...>.(a|b|c)`: Linear modules named `a`, `b`, `c` inside those layers."""
    return rf"{layers}\.(?:.*\.)?({'|'.join(re.escape(n) for n in linears)})"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def canonical_name(name: str) -> str:
    """A parameter/module name as in the bare model: without the PeftModel's
    `base_model.model.`, `.base_layer`, `.original_module` and `.modules_to_save.default`."""
    name = name.removeprefix("base_model.model.")
    for marker in (".base_layer", ".original_module", ".modules_to_save.default"):
        name = name.replace(marker + ".", ".")
        name = name.removesuffix(marker)
    return name


def _llava_unused(config: Mapping[str, Any]) -> tuple[str, ...]:
    """LLaVA takes hidden states of one (or a few) vision layers: later layers and the
    pooling parts of the vision tower (post-layernorm, SigLIP's head) never run into the loss."""
    vision = config.get("vision_config") or {}
    n_layers = int(vision.get("num_hidden_layers", 24))
    layer = config.get("vision_feature_layer", -2)
    layers = layer if isinstance(layer, list) else [layer]
    last_used = max((n_layers + i if i < 0 else i - 1) for i in layers)  # hidden_states[k]
    out = [f"model.vision_tower.encoder.layers.{i}" for i in range(last_used + 1, n_layers)]
    return (*out, "model.vision_tower.post_layernorm", "model.vision_tower.head")


def _paligemma_unused(config: Mapping[str, Any]) -> tuple[str, ...]:
    return ("model.vision_tower.head",)


_LLAVA_LIKE = {
    "vision_tower": ("model.vision_tower",),
    "projector": ("model.multi_modal_projector", "model.image_newline"),
    "language_model": ("model.language_model", "lm_head"),
    "llm_layers": r"model\.language_model\.layers\.\d+",
    "vision_layers": r"model\.vision_tower\.encoder\.layers\.\d+",
    "unused": _llava_unused,
}
_QWEN_LIKE = {
    "vision_tower": ("model.visual",),
    "projector": ("model.visual.merger",),
    "language_model": ("model.language_model", "lm_head"),
    "llm_layers": r"model\.language_model\.layers\.\d+",
    "vision_layers": r"model\.visual\.blocks\.\d+",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "supports_video": True,
    "supports_multi_image": True,
}
_VIDEO_PROCESSOR = (
    "videos go through the family's own video processor (frames sampled with PyAV per "
    "data.num_frames / data.fps)"
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="llava",
            title="LLaVA-1.5",
            model_types=("llava",),
            model_class="LlavaForConditionalGeneration",
            examples=("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf"),
            quirks=(
                "one image per sample (extra images are dropped by the data pipeline)",
                "processor needs patch_size and num_additional_image_tokens=1 (the CLS token)",
                "vision_feature_layer=-2: the last CLIP layer is unused and kept frozen",
            ),
            **_LLAVA_LIKE,  # type: ignore[arg-type]
        ),
        Family(
            name="llava_next",
            title="LLaVA-NeXT (LLaVA-1.6), Granite Vision",
            model_types=("llava_next",),
            model_class="LlavaNextForConditionalGeneration",
            supports_multi_image=True,
            examples=(
                "llava-hf/llava-v1.6-mistral-7b-hf",
                "llava-hf/llava-v1.6-vicuna-7b-hf",
                "ibm-granite/granite-vision-3.2-2b",
            ),
            quirks=(
                "any-resolution tiling: image tokens per image depend on its size",
                "Granite Vision = LLaVA-NeXT with a SigLIP tower and a Granite decoder "
                "(FSDP wraps GraniteDecoderLayer)",
            ),
            **_LLAVA_LIKE,  # type: ignore[arg-type]
        ),
        Family(
            name="llava_next_video",
            title="LLaVA-NeXT-Video",
            model_types=("llava_next_video",),
            model_class="LlavaNextVideoForConditionalGeneration",
            video_token="<video>",
            supports_video=True,
            supports_multi_image=True,
            examples=("llava-hf/LLaVA-NeXT-Video-7B-hf",),
            quirks=(_VIDEO_PROCESSOR,),
            **_LLAVA_LIKE,  # type: ignore[arg-type]
        ),
        Family(
            name="qwen2_vl",
            title="Qwen2-VL",
            model_types=("qwen2_vl",),
            model_class="Qwen2VLForConditionalGeneration",
            examples=("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"),
            vision_lora_modules=("qkv", "attn.proj", "fc1", "fc2"),
            quirks=(
                "dynamic resolution: image tokens = (h/28)*(w/28); bound them with the "
                "image processor's min_pixels/max_pixels",
                "the projector is `visual.merger`, inside the vision tower module",
                _VIDEO_PROCESSOR,
            ),
            **_QWEN_LIKE,  # type: ignore[arg-type]
        ),
        Family(
            name="qwen2_5_vl",
            title="Qwen2.5-VL",
            model_types=("qwen2_5_vl",),
            model_class="Qwen2_5_VLForConditionalGeneration",
            examples=("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
            vision_lora_modules=("qkv", "attn.proj", "gate_proj", "up_proj", "down_proj"),
            quirks=(
                "dynamic resolution as Qwen2-VL; window attention in the vision tower",
                _VIDEO_PROCESSOR,
            ),
            **_QWEN_LIKE,  # type: ignore[arg-type]
        ),
        Family(
            name="idefics3",
            title="Idefics3, SmolVLM",
            model_types=("idefics3", "smolvlm"),
            model_class="Idefics3ForConditionalGeneration",
            vision_tower=("model.vision_model",),
            projector=("model.connector",),
            language_model=("model.text_model", "lm_head"),
            llm_layers=r"model\.text_model\.layers\.\d+",
            vision_layers=r"model\.vision_model\.encoder\.layers\.\d+",
            supports_multi_image=True,
            examples=(
                "HuggingFaceM4/Idefics3-8B-Llama3",
                "HuggingFaceTB/SmolVLM-Instruct",
                "HuggingFaceTB/SmolVLM-256M-Instruct",
            ),
            quirks=(
                "images are split into tiles plus a global image; tokens per image vary",
                "SmolVLM (model_type smolvlm) shares the layout and has a video processor",
            ),
        ),
        Family(
            name="paligemma",
            title="PaliGemma",
            model_types=("paligemma",),
            model_class="PaliGemmaForConditionalGeneration",
            vision_tower=("model.vision_tower",),
            projector=("model.multi_modal_projector",),
            language_model=("model.language_model", "lm_head"),
            llm_layers=r"model\.language_model\.layers\.\d+",
            vision_layers=r"model\.vision_tower\.encoder\.layers\.\d+",
            examples=("google/paligemma-3b-pt-224", "google/paligemma2-3b-pt-224"),
            unused=_paligemma_unused,
            quirks=(
                "no chat format: prompt, newline, answer; the processor prepends the image "
                "tokens and <bos>",
                "the prompt attends bidirectionally (prefix-LM): pass token_type_ids",
                "LM head tied to the embeddings",
            ),
        ),
        Family(
            name="mllama",
            title="Llama 3.2 Vision (Mllama)",
            model_types=("mllama",),
            model_class="MllamaForConditionalGeneration",
            vision_tower=("model.vision_model",),
            projector=("model.multi_modal_projector",),
            language_model=("model.language_model", "lm_head"),
            llm_layers=r"model\.language_model\.layers\.\d+",
            vision_layers=r"model\.vision_model\.(transformer|global_transformer)\.layers\.\d+",
            vision_lora_modules=("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
            image_token="<|image|>",
            examples=("meta-llama/Llama-3.2-11B-Vision-Instruct",),
            quirks=(
                "images enter through cross-attention layers of the decoder, not as tokens",
                "no flash_attention_2 (use sdpa)",
                "embeddings have vocab_size + 8 rows",
            ),
        ),
    )
}

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
"""Family names (imported by the job spec's validation)."""

_BY_MODEL_TYPE: dict[str, str] = {mt: f.name for f in FAMILIES.values() for mt in f.model_types}


def get_family(name: str) -> Family:
    """The family called `name`; a user error with the nearest names otherwise."""
    if name in FAMILIES:
        return FAMILIES[name]
    raise UserError(
        f"unknown model family '{name}'.{did_you_mean(name, FAMILIES)}",
        hint=f"use one of: {', '.join(FAMILIES)} (see `vlaunch models`), or leave model.family "
        "unset to detect it from config.json",
    )


def detect_family(config: Mapping[str, Any]) -> str:
    """The family of a model config (its `model_type`)."""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    known = ", ".join(sorted(_BY_MODEL_TYPE))
    raise UserError(
        f"cannot tell the VLM family of a model with model_type '{model_type}'."
        f"{did_you_mean(str(model_type), _BY_MODEL_TYPE)}",
        hint=f"vlaunch supports model types {known}; set model.family if this model uses one "
        "of those layouts, or add a family (docs/models.md)",
    )
