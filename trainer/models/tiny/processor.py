"""The processor of a tiny model: the family's own classes, sized to the tiny vision tower.

The processor class comes from `AutoProcessor`'s mapping, its image / video processors and
feature extractor from theirs. Their size settings are rewritten so that a 32-64 px image
becomes one 32 px image (or a few 32 px tiles) in the tiny tower's patches: lengths to 32 px,
pixel areas (dynamic-resolution processors) to between 32x32 and 64x64, tile counts to at
most 2 (or the vision config's `max_num_tiles`), patch / merge / temporal patch sizes to the
vision config's; video processors take every frame. Processor arguments named like a config
key (`patch_size`, `vision_feature_select_strategy`, `spatial_merge_size`, ...) take the tiny
config's value; those that fix the number of tokens an image becomes (`image_seq_len`, ...)
take what the tiny model's `get_image_features` makes of one image, and
`num_additional_image_tokens` what its vision tower outputs besides one token per patch.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from trainer.models.tiny.classes import (
    processor_class,
    subprocessor_class,
    subprocessor_defaults,
)
from trainer.models.tiny.overrides import override
from trainer.models.tiny.shrink import IMAGE_SIZE

if TYPE_CHECKING:
    from transformers import (
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
    )

logger = logging.getLogger(__name__)

LENGTH_KEYS = frozenset(
    {"height", "width", "shortest_edge", "longest_edge", "max_height", "max_width"}
)
AREA_KEYS = frozenset({"min_pixels", "max_pixels"})
TILE_LENGTH_KEYS = frozenset({"tile_size", "scale_resolution", "image_size", "img_size"})
TILE_COUNT_KEYS = frozenset(
    {"max_image_tiles", "max_num_tiles", "max_slice_nums", "max_crops", "max_tiles"}
)
MAX_TILES = 2
SEQ_LENGTH_ARGS = ("image_seq_length", "image_seq_len", "num_image_tokens")
"""Processor arguments that fix the number of tokens an image becomes."""
CONFIG_ALIASES = {
    "image_seq_length": ("image_seq_length", "mm_tokens_per_image"),
    "img_size": ("img_size", "image_size"),
}
"""Processor arguments whose config key has another name (Gemma 3 counts its image tokens
in `mm_tokens_per_image`)."""


def tiny_processor(
    model_type: str,
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel | None = None,
) -> ProcessorMixin:
    """`model_type`'s processor for the tiny `config`, around `tokenizer`.

    Processors that write a fixed number of tokens per image (`image_seq_len`, ...) get the
    number of image features `model` (the tiny model) produces for one image.
    """
    cls = processor_class(model_type)
    if cls is None:
        raise NotImplementedError(f"{model_type}: transformers maps no processor class to it")
    custom = override(model_type)
    sized: dict[str, Any] = {}
    for attr in cls.get_attributes():
        if attr in ("image_processor", "video_processor"):
            sub = subprocessor_class(attr, model_type)
            if sub is None:
                continue
            extra: dict[str, Any] = custom.get(attr, {})  # type: ignore[assignment]
            sized[attr] = sub(**(sized_kwargs(sub(), config) | extra))
    kwargs = subprocessor_defaults(model_type, cls, tokenizer, sized)
    kwargs |= processor_kwargs(cls, config)
    fixed = [p for p in SEQ_LENGTH_ARGS if p in inspect.signature(cls.__init__).parameters]
    image_processor: Any = kwargs.get("image_processor")
    has_attr = image_processor is not None and hasattr(image_processor, "image_seq_length")
    if (fixed or has_attr) and model is not None:
        count = image_features_per_image(model, image_processor)
        if count is not None:
            kwargs |= dict.fromkeys(fixed, count)
            if has_attr:
                image_processor.image_seq_length = count  # PaliGemma's processor reads it
    kwargs |= dict(custom.get("processor", {}))
    return cls(**kwargs)


def image_features_per_image(model: PreTrainedModel, image_processor: Any) -> int | None:
    """How many image features (= placeholder tokens) the model makes of one sample image;
    None where the model has no `get_image_features` taking the image processor's output."""
    import torch

    from trainer.models.tiny.check import as_model_dtype
    from trainer.models.tiny.media import sample_image

    get_features: Any = getattr(model, "get_image_features", None) or getattr(
        model.base_model, "get_image_features", None
    )
    if image_processor is None or not callable(get_features):
        return None
    inputs = as_model_dtype(
        dict(image_processor(images=[sample_image()], return_tensors="pt")), model
    )
    accepted = inspect.signature(get_features).parameters
    try:
        with torch.no_grad():
            out = get_features(**{k: v for k, v in inputs.items() if k in accepted})
    except TypeError as e:  # it needs inputs the image processor does not make
        logger.debug("%s: cannot count image features: %s", type(model).__name__, e)
        return None
    features = getattr(out, "pooler_output", out)
    if isinstance(features, list | tuple):
        return sum(f.numel() // f.shape[-1] for f in features)
    return int(features.numel() // features.shape[-1])


def _vision(config: PretrainedConfig) -> dict[str, Any]:
    d = config.to_dict()
    vision = d.get("vision_config")
    return vision if isinstance(vision, dict) else d


def sized_kwargs(default: Any, config: PretrainedConfig) -> dict[str, Any]:
    """Size settings of an image / video processor for the tiny vision tower."""
    vision = _vision(config)
    current = default.to_dict() if hasattr(default, "to_dict") else {}
    out: dict[str, Any] = {}
    area_style = "merge_size" in current and "temporal_patch_size" in current
    for key, value in current.items():
        if key in ("size", "crop_size", "max_image_size") and isinstance(value, dict):
            out[key] = {
                k: _length(k, area_style and key != "crop_size")
                if k in LENGTH_KEYS
                else IMAGE_SIZE**2
                if k in AREA_KEYS
                else v
                for k, v in value.items()
            }
        elif key in AREA_KEYS and isinstance(value, int):
            out[key] = IMAGE_SIZE**2
        elif key in TILE_LENGTH_KEYS | {"max_image_size"} and isinstance(value, int):
            out[key] = IMAGE_SIZE
        elif key == "max_patches" and "crop_to_patches" in current and isinstance(value, int):
            out[key] = min(value, MAX_TILES)  # GOT-OCR2-style tiling: a tile count
        elif key in TILE_COUNT_KEYS and isinstance(value, int):
            out[key] = vision.get("max_num_tiles") or min(value, MAX_TILES)
        elif key in ("patch_size", "encoder_patch_size") and isinstance(
            vision.get("patch_size"), int
        ):
            patch = vision["patch_size"]
            out[key] = {"height": patch, "width": patch} if isinstance(value, dict) else patch
        elif key == "merge_size" and isinstance(vision.get("spatial_merge_size"), int):
            out[key] = vision["spatial_merge_size"]
        elif key == "temporal_patch_size" and isinstance(vision.get("temporal_patch_size"), int):
            out[key] = vision["temporal_patch_size"]
        elif key == "do_sample_frames":
            out[key] = False  # the sample videos are 8 frames: take them all, no fps metadata
        elif key == "image_grid_pinpoints":
            pinpoints = config.to_dict().get("image_grid_pinpoints")
            if pinpoints:
                out[key] = pinpoints
    return out


def _length(key: str, area: bool) -> int:
    """A size setting in px (or px², for dynamic-resolution processors such as Qwen-VL's:
    between one and four 32 px images' worth of pixels)."""
    if not area:
        return IMAGE_SIZE
    return (2 * IMAGE_SIZE) ** 2 if key == "longest_edge" else IMAGE_SIZE**2


def processor_kwargs(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Processor `__init__` arguments that the tiny config has a value for, by name."""
    d = config.to_dict()
    vision = _vision(config)
    attributes = set(cls.get_attributes()) | {"chat_template"}  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name in attributes or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name == "num_additional_image_tokens":
            out[name] = extra_vision_tokens(config)
            continue
        for key in CONFIG_ALIASES.get(name, (name,)):
            for level in (d, vision):
                if level.get(key) is not None and name not in out:
                    out[name] = level[key]
    return out


def extra_vision_tokens(config: PretrainedConfig) -> int:
    """Tokens the vision tower outputs besides one per patch (CLIP's CLS: 1, SigLIP: 0),
    counted on the tiny tower itself."""
    import torch
    from transformers import AutoModel

    vision = config.vision_config
    try:
        with torch.device("meta"):
            tower = AutoModel.from_config(vision)
    except ValueError:  # a tower AutoModel cannot build alone (Florence-2's DaViT)
        return 0
    size, patch = vision.image_size, vision.patch_size
    pixels = torch.zeros(1, vision.num_channels, size, size, device="meta")
    with torch.no_grad():
        out = tower(pixel_values=pixels)
    return int(out.last_hidden_state.shape[1]) - (size // patch) ** 2
