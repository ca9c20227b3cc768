"""Llama 3.2 Vision (Mllama): images enter through cross-attention layers."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    max_images=1,
    row_media_keys=frozenset({"pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"}),
    packing="its cross-attention mask and images are laid out per row",
    attn_not=("flash_attention_2",),
    notes=(
        "images enter through cross-attention layers of the decoder, not as tokens",
        "no flash_attention_2 (use sdpa)",
    ),
)
