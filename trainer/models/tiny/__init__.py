"""Tiny models of any image-text-to-text architecture transformers has, derived from it.

`build_tiny(model_type, out_dir)` writes a model folder (random weights, a byte-level
tokenizer with the family's special tokens, the family's own processor sized to the tiny
vision tower, a chat template) that loads with `AutoModelForImageTextToText` and
`AutoProcessor` like a downloaded checkpoint. `tiny_config(model_type)` is its config.
`VERIFIED` lists the architectures the test suite trains a step on.

Modules: `shrink` (config), `tokenizer`, `processor`, `template` (chat template), `build`,
`check` (one training step and which parts it reached), `overrides` (per-architecture
exceptions, each with its reason), `verified`. None imports torch or transformers before a
function needs them.
"""

from __future__ import annotations

from trainer.models.tiny.build import build_tiny
from trainer.models.tiny.shrink import tiny_config
from trainer.models.tiny.verified import VERIFIED

__all__ = ["VERIFIED", "build_tiny", "check_model_type", "tiny_config"]


def check_model_type(model_type: str) -> None:
    """A user error, with the nearest names, unless transformers has this architecture."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from vlaunch_core.errors import UserError, did_you_mean

    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise UserError(
            f"unknown tiny model type '{model_type}'."
            f"{did_you_mean(model_type, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)}",
            hint="tiny:<model_type> takes an image-text-to-text architecture of transformers "
            f"(`vlaunch models`; verified: {', '.join(VERIFIED[:8])}, ...)",
        )
