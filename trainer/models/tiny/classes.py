"""The processor classes of an architecture, from transformers' auto mappings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, ProcessorMixin


def processor_class(model_type: str) -> type[ProcessorMixin] | None:
    """The class `AutoProcessor` gives `model_type` (None: the architecture has none)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    return getattr(transformers, name) if name else None


def _table(kind: str) -> dict[str, Any]:
    from transformers.models.auto import (
        feature_extraction_auto,
        image_processing_auto,
        video_processing_auto,
    )

    tables: dict[str, dict[str, Any]] = {
        "image_processor": image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES,
        "video_processor": video_processing_auto.VIDEO_PROCESSOR_MAPPING_NAMES,
        "feature_extractor": feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES,
    }
    return tables[kind]


def subprocessor_class(kind: str, model_type: str) -> type | None:
    """The image processor / video processor / feature extractor class of `model_type`.

    The auto mapping's entry for the model type, else the entry of another model type with
    the same processor class (Qwen3-VL-MoE has no image processor entry; Qwen3-VL, with the
    same `Qwen3VLProcessor`, has). Image processors: the torchvision backend when installed
    (what `AutoImageProcessor` picks), else PIL.
    """
    from transformers.models.auto import (
        feature_extraction_auto,
        image_processing_auto,
        video_processing_auto,
    )
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils import is_torchvision_available

    table = _table(kind)
    entry = table.get(model_type)
    if entry is None:
        same = PROCESSOR_MAPPING_NAMES.get(model_type)
        entry = next(
            (table[t] for t, p in PROCESSOR_MAPPING_NAMES.items() if p == same and t in table),
            None,
        )
    if entry is None:
        return None
    if kind == "image_processor":
        backends = ("torchvision", "pil") if is_torchvision_available() else ("pil",)
        name = next((entry[b] for b in backends if entry.get(b)), None)
        return image_processing_auto.get_image_processor_class_from_name(name) if name else None
    if isinstance(entry, dict):
        entry = entry.get("torchvision") or entry.get("pil")
    if not isinstance(entry, str):
        return None
    if kind == "video_processor":
        return video_processing_auto.video_processor_class_from_name(entry)
    return feature_extraction_auto.feature_extractor_class_from_name(entry)


TOKENIZER_ATTRIBUTES = ("tokenizer", "qformer_tokenizer")
"""Processor attributes that take a text tokenizer (InstructBLIP has a second one)."""


def subprocessor_defaults(
    model_type: str,
    cls: type[ProcessorMixin],
    tokenizer: PreTrainedTokenizerBase,
    sized: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments that build `cls`: `tokenizer`, and each other part the processor
    class declares (image/video processor, feature extractor) from `sized` or built with its
    class defaults."""
    kwargs: dict[str, Any] = {}
    for attr in cls.get_attributes():
        if attr in TOKENIZER_ATTRIBUTES:
            kwargs[attr] = tokenizer
        elif sized and attr in sized:
            kwargs[attr] = sized[attr]
        else:
            sub = subprocessor_class(attr, model_type)
            if sub is None:
                raise NotImplementedError(
                    f"{model_type}: no class for the processor part {attr!r} in transformers'"
                    " auto mappings"
                )
            kwargs[attr] = sub()
    return kwargs
