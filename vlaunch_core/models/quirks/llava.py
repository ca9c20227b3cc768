"""LLaVA-1.5: trained with one image per sample."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    max_images=1,
    notes=("trained with one image per sample; a sample with more images is refused",),
)
