"""Per-architecture exceptions to the generic tiny-model rules (data only).

An entry exists only where the generic rule cannot work, and says why. Keys:
- `config`: dotted paths into the shrunk config -> value (applied last);
- `processor`, `image_processor`, `video_processor`: keyword arguments of those classes,
  applied over the derived ones;
- `template`: `image` / `video` placeholder text of the chat template, with `{attr}` fields
  filled from the processor's attributes;
- `why`: the reason, one line per item.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Override(TypedDict, total=False):
    config: dict[str, Any]
    processor: dict[str, Any]
    image_processor: dict[str, Any]
    video_processor: dict[str, Any]
    named_tokens: dict[str, str]
    template: dict[str, str]
    why: str


OVERRIDES: dict[str, Override] = {
    "mllama": {
        "config": {"vision_config.vision_output_dim": 128},
        "why": "vision_output_dim is not a width: the tower concatenates its last layer with "
        "each intermediate layer (1 + len(intermediate_layers_indices)) x hidden_size = 2 x 64.",
    },
}


def override(model_type: str) -> Override:
    """The exceptions of `model_type` (empty when the generic rules cover it)."""
    return OVERRIDES.get(model_type, {})
