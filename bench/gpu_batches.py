"""Synthetic full-length micro-batches for a model config: the GPU benchmark's data.

`random:<name>` models have no tokenizer or processor, so batches are built from the config:
each sample is one image (the config's resolution for LLaVA; `image_px` square for Qwen2-VL)
followed by random text tokens up to exactly `seq_len` tokens, the length the memory estimator
assumes (`data.max_length`). Labels are the text tokens (image tokens are -100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BatchShape:
    """What a batch holds, for the FLOP count."""

    samples: int
    seq_len: int
    image_tokens: int
    """Tokens one image takes in the language model's sequence."""
    vision_tokens: int
    """Patches one image is in the vision tower (its attention sequence)."""


def _text(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


def _special_ids(config: dict[str, Any]) -> set[int]:
    ids = set()
    for src in (config, _text(config)):
        for key, value in src.items():
            if key.endswith(("token_id", "token_index")) and isinstance(value, int):
                ids.add(value)
    return ids


def _random_text(n_rows: int, n: int, config: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    import torch

    vocab = int(_text(config).get("vocab_size") or config["vocab_size"])
    specials = _special_ids(config)
    low = 0 if vocab < 1000 else 100
    high = min([vocab, *[s for s in specials if s > low]])  # below the added special tokens
    ids = torch.randint(low, high, (n_rows, n), generator=gen)
    for s in specials:  # tiny vocabularies put their specials first
        ids[ids == s] = high - 1 if high - 1 not in specials else low
    return ids


def synthetic_batch(
    config: dict[str, Any], samples: int, seq_len: int, *, image_px: int = 448, seed: int = 0
) -> tuple[dict[str, torch.Tensor], BatchShape]:
    """One micro-batch of `samples` rows of exactly `seq_len` tokens (labels included)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    model_type = config.get("model_type")
    vision = config.get("vision_config") or {}
    if model_type == "llava":
        side = int(vision["image_size"])
        patches = (side // int(vision["patch_size"])) ** 2
        n_img = patches + (1 if config.get("vision_feature_select_strategy") == "full" else 0)
        prefix = torch.full((samples, n_img), int(config["image_token_index"]))
        extra = {"pixel_values": torch.randn(samples, 3, side, side, generator=gen)}
        vision_tokens = patches + 1  # CLIP's class token
    elif model_type in ("qwen2_vl", "qwen2_5_vl"):
        patch, merge = int(vision["patch_size"]), int(vision["spatial_merge_size"])
        temporal = int(vision.get("temporal_patch_size", 2))
        grid = max(merge, image_px // patch // merge * merge)
        n_img = grid * grid // merge**2
        prefix = torch.cat(
            [
                torch.full((samples, 1), int(config["vision_start_token_id"])),
                torch.full((samples, n_img), int(config["image_token_id"])),
                torch.full((samples, 1), int(config["vision_end_token_id"])),
            ],
            dim=1,
        )
        channels = int(vision.get("in_chans", vision.get("in_channels", 3)))
        extra = {
            "pixel_values": torch.randn(
                samples * grid * grid, channels * temporal * patch * patch, generator=gen
            ),
            "image_grid_thw": torch.tensor([[1, grid, grid]] * samples),
        }
        vision_tokens = grid * grid
    else:
        raise ValueError(f"no synthetic batches for model_type {model_type!r} (llava, qwen2_vl)")
    text_len = seq_len - prefix.shape[1]
    if text_len < 2:
        raise ValueError(
            f"seq_len {seq_len} leaves no room for text after {prefix.shape[1]} image tokens"
        )
    text = _random_text(samples, text_len, config, gen)
    input_ids = torch.cat([prefix, text], dim=1)
    labels = input_ids.clone()
    labels[:, : prefix.shape[1]] = IGNORE_INDEX
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        **extra,
    }
    if model_type != "llava":  # M-RoPE needs each token's modality (0 text, 1 image)
        image_id = int(config["image_token_id"])
        batch["mm_token_type_ids"] = (input_ids == image_id).to(torch.int32)
    return batch, BatchShape(samples, seq_len, n_img, vision_tokens)
