"""Idefics3 / SmolVLM: images laid out per batch row (`pixel_values [rows, images, ...]`)."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    row_media_keys=frozenset({"pixel_values", "pixel_attention_mask"}),
    packing="its images are laid out per row (pixel_values [rows, images, ...])",
    notes=("images are split into tiles plus a global image; tokens per image vary",),
)
