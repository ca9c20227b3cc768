"""Per-architecture exceptions to the generic tiny-model rules (data only).

An entry exists only where the generic rule cannot work, and says why. Keys:
- `config`: dotted paths into the shrunk config -> value (applied last);
- `processor`, `image_processor`, `video_processor`: keyword arguments of those classes,
  applied over the derived ones;
- `named_tokens`: named special tokens the tokenizer must have (`boa_token` -> `<|boa|>`)
  beyond those the processor is seen to require;
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


_GLM_V: Override = {
    "template": {
        "image": "<|begin_of_image|>{image_token}<|end_of_image|>",
        "video": "<|begin_of_video|>{video_token}<|end_of_video|>",
    },
    "why": "The processor finds a video's tokens between the literal tokens <|begin_of_video|> "
    "and <|end_of_video|> (create_mm_token_type_ids); its config names them video_start/end "
    "with ids only. Images get GLM's own wrappers so that two images stay two spans.",
}

_GEMMA4: Override = {
    "named_tokens": {"audio_token": "<|audio|>", "boa_token": "<|boa|>", "eoa_token": "<|eoa|>"},
    "image_processor": {"max_soft_tokens": 70},
    "why": "transformers 5.25 bug: Gemma4Processor.validate_inputs raises 'Audio inputs were "
    "provided' whenever the tokenizer has no boa/eoa token, audio or not (`a and b or c` "
    "precedence); the released tokenizers name them, so the tiny one does too. "
    "max_soft_tokens: the image processor fills its token budget, and accepts only 70, 140, "
    "280, 560 or 1120; 70 is the smallest.",
}

OVERRIDES: dict[str, Override] = {
    "gemma4": _GEMMA4,
    "gemma4_unified": _GEMMA4,
    "diffusion_gemma": _GEMMA4,
    "cohere2_vision": {
        "image_processor": {"patch_size": 2},
        "why": "The image processor's patch_size is the number of tokens per tile side after "
        "the projector's downsampling ((32 / 8) / 2 = 2), not the vision tower's patch size.",
    },
    "glm4v": _GLM_V,
    "glm4v_moe": _GLM_V,
    "glm46v": _GLM_V,
    "glm5_next": _GLM_V,
    "llava_onevision": {
        "processor": {"num_image_tokens": 16},
        "why": "num_image_tokens counts the tokens of one tile out of the vision tower "
        "((32 / 8)^2 = 16 for SigLIP, no CLS), not the image's features (tiles + newlines).",
    },
    "llama4": {
        "config": {"vision_config.intermediate_size": 256},
        "why": "The vision adapter's fc1 takes the pixel-shuffled patches: its input size "
        "(vision intermediate_size) is hidden_size / pixel_shuffle_ratio^2 = 64 / 0.25.",
    },
    "vipllava": {
        "config": {"vision_feature_layers": [-2, -1]},
        "processor": {"vision_feature_select_strategy": "default"},
        "why": "The projector concatenates five fixed layers of the vision tower "
        "(-2, -5, -8, -11, 6); the two-layer tiny tower has three hidden states. The model "
        "drops CLIP's CLS token, and its config has no vision_feature_select_strategy for "
        "the (shared LLaVA) processor to read.",
    },
    "molmo2": {
        "config": {"adapter_config.vision_feature_layer": [-1, -2]},
        "image_processor": {"overlap_margins": [0, 0]},
        "why": "The adapter reads vision layers 24 and 18, which the two-layer tiny tower has "
        "not; it reads the last two instead. Overlapping crops keep 4-patch margins, more than "
        "a 4-patch tiny crop has.",
    },
    "muse_glimmer": {
        "config": {"out_hidden_size": 256},
        "why": "The vision adapter takes the pixel-shuffled patches: out_hidden_size is the "
        "vision width times merge_size^2 (64 x 4), not a width of its own.",
    },
    "mllama": {
        "config": {"vision_config.vision_output_dim": 128},
        "why": "vision_output_dim is not a width: the tower concatenates its last layer with "
        "each intermediate layer (1 + len(intermediate_layers_indices)) x hidden_size = 2 x 64.",
    },
}


def override(model_type: str) -> Override:
    """The exceptions of `model_type` (empty when the generic rules cover it)."""
    return OVERRIDES.get(model_type, {})
