"""Gemma 3: the image tokens of one image attend to each other in both directions."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(
    packing="its image tokens attend bidirectionally within each image (token_type_ids), "
    "a mask transformers builds per row, not per packed sample (measured: packed logits "
    "differ)",
    notes=("image tokens attend to each other bidirectionally (token_type_ids)",),
)
