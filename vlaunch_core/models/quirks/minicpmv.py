"""MiniCPM-V 4.6 / 4.7 and MiniCPM-o OCR: the processor packs the patches of every image (and
video frame) of a batch along the last dimension of one `[1, channels, patch, length]` tensor;
`target_sizes` lists the slices in the same order. The vision tower's window-attention
merger runs after layer `insert_layer_id`, and not at all in `downsample_mode: 4x`."""

from collections.abc import Mapping
from typing import Any

from vlaunch_core.models.quirks import Quirks


def _unused(config: Mapping[str, Any]) -> tuple[str, ...]:
    vision = config.get("vision_config") or {}
    layer = vision.get("insert_layer_id", config.get("insert_layer_id", -1))
    layers = vision.get("num_hidden_layers", 0)
    if config.get("downsample_mode") == "4x" or not 0 <= layer < layers:
        return ("model.vision_tower.vit_merger",)
    return ()


QUIRKS = Quirks(
    media_concat_dims={"pixel_values": -1, "pixel_values_videos": -1},
    unused=_unused,
    notes=("images are sliced; the slices of a batch are packed along one sequence of patches",),
)
