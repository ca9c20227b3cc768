"""LLaVA-NeXT, LLaVA-NeXT-Video and LLaVA-OneVision: `image_newline` is a bare parameter of
the multimodal model (the row separator of any-resolution tiles); it is trained with the
projector."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    part_overrides={"model.image_newline": "projector"},
    notes=("any-resolution tiling: the image tokens of an image depend on its size",),
)
