"""The architectures the installed transformers can fine-tune as VLMs (`vlaunch models`)."""

from __future__ import annotations

from typing import Any


def architectures() -> list[dict[str, Any]]:
    """Every image-text-to-text architecture of the installed transformers, with whether
    it has a video processor, whether vlaunch's test matrix verifies it, and its quirks."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    from vlaunch_core.models.quirks import quirks_for

    verified = set(verified_types())
    rows = []
    for model_type, cls in sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.items()):
        quirks = quirks_for(model_type)
        rows.append(
            {
                "model_type": model_type,
                "class": cls,
                "video": model_type in VIDEO_PROCESSOR_MAPPING_NAMES,
                "verified": model_type in verified,
                "quirks": "; ".join(quirks.notes),
            }
        )
    return rows


def verified_types() -> tuple[str, ...]:
    """The model types the test matrix trains, exports and reloads (tests/models)."""
    from trainer.models.tiny import VERIFIED

    return tuple(VERIFIED)
