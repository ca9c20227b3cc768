"""True quirks of model families: what cannot be read off the model itself.

Everything else (parts, layer classes, LoRA targets, shapes, processors, chat templates) is
derived (`vlaunch_core.models.description`). A family with quirks has one small module here
defining `QUIRKS = Quirks(...)`; `QUIRK_MODULES` maps its config `model_type`s to it and is
the only place to register it (imported lazily). docs/models.md, "Adding a family", shows a
whole file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlaunch_core.models.description import Part

#: model_type -> module under vlaunch_core.models.quirks
QUIRK_MODULES: dict[str, str] = {
    "llava": "llava",
    "llava_next": "llava_next",
    "llava_next_video": "llava_next",
    "llava_onevision": "llava_next",
    "paligemma": "paligemma",
    "mllama": "mllama",
    "qwen2_vl": "qwen_vl",
    "qwen2_5_vl": "qwen_vl",
    "qwen3_vl": "qwen_vl",
    "qwen3_vl_moe": "qwen_vl",
    "qwen3_5": "qwen3_5",
    "qwen3_5_moe": "qwen3_5",
    "gemma3": "gemma3",
    "idefics3": "idefics3",
    "glm4v": "glm4v",
    "glm46v": "glm4v",
    "glm4v_moe": "glm4v",
    "minicpm_ocr": "minicpmv",
    "minicpmv4_6": "minicpmv",
    "minicpmv4_7": "minicpmv",
    "molmo2": "molmo2",
    "granite_docling": "granite_docling",
    "ovis2_5": "ovis2_5",
    "smolvlm": "idefics3",
    "llava_llama": "vila",
    "nvila": "nvila",
}


@dataclass(frozen=True)
class Quirks:
    """What a family needs that its model and checkpoint do not say."""

    notes: tuple[str, ...] = ()
    """Worth knowing (shown by `vlaunch models NAME` and in docs/models.md)."""
    refuse: str | None = None
    """The family cannot be trained: this message says why and what to use instead."""
    refuse_hint: str | None = None
    part_overrides: Mapping[str, Part] = field(default_factory=dict)
    """Parameter-name prefix -> part, for parameters whose names do not say it."""
    max_images: int | None = None
    """Images per sample the model was built for (None: any number)."""
    video: bool | None = None
    """Override of the derived video support."""
    prefix_lm: bool = False
    """The prompt attends bidirectionally: `token_type_ids` mark the answer (PaliGemma)."""
    row_media_keys: frozenset[str] = frozenset()
    """Media tensors laid out per batch row (`[rows, images, ...]`): collation pads rows
    without images with zeros instead of concatenating."""
    media_concat_dims: Mapping[str, int] = field(default_factory=dict)
    """Media tensors the processor batches along another dimension than the first (MiniCPM-V
    packs the patches of every image of a batch along the last dimension of one tensor)."""
    mixed_media: bool = True
    """One forward pass may take images and videos together (False: a micro batch that
    mixes them is refused with a clear error instead of failing inside the model)."""
    packing: str | None = None
    """Why packing is refused for this family (None: no known reason; packing is allowed for
    the families verified in `trainer.data.collate.PACKABLE`)."""
    unused: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = field(
        default=None, compare=False
    )
    """Parameter prefixes the forward pass never uses for a config (kept frozen)."""
    attn_not: tuple[str, ...] = ()
    """Attention implementations the family does not support."""
    lora_all_linears: bool = False
    """Default LoRA targets: every Linear of a part (lm_head excepted), not only those
    inside its layers."""


NO_QUIRKS = Quirks()


def quirks_for(model_type: str) -> Quirks:
    """The quirks of a model type (none for most)."""
    module = QUIRK_MODULES.get(model_type)
    if module is None:
        return NO_QUIRKS
    quirks: Quirks = importlib.import_module(f"{__name__}.{module}").QUIRKS
    return quirks
