"""Molmo2: the model refuses images and videos in one forward pass."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    mixed_media=False,
    notes=("a micro batch takes images or videos, not both (the model refuses both at once)",),
)
