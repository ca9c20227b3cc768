"""GLM-4.1V / GLM-4.5V / GLM-4.6V: video frames are placed with the image token, so one forward
pass cannot tell images from videos when it gets both."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    mixed_media=False,
    notes=("a micro batch takes images or videos, not both (video frames use the image token)",),
)
