"""Qwen-VL (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5): 3-D multimodal RoPE positions."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    notes=(
        "dynamic resolution: image tokens = (h/28)*(w/28); bound them with the image "
        "processor's min_pixels/max_pixels",
        "multimodal RoPE: position ids are 3-D; packed rows get each sample's own from the "
        "model's get_rope_index",
    ),
)
