"""Tiny models of any image-text-to-text architecture transformers has, derived from it.

`build_tiny(model_type, out_dir)` writes a model folder (random weights, a byte-level
tokenizer with the family's special tokens, the family's own processor sized to the tiny
vision tower, a chat template) that loads with `AutoModelForImageTextToText` and
`AutoProcessor` like a downloaded checkpoint. `tiny_config(model_type)` is its config.
`VERIFIED` lists the architectures the test suite trains a step on.

Modules: `shrink` (config), `tokenizer`, `processor`, `template` (chat template), `build`,
`check` (one training step and which parts it reached), `overrides` (per-architecture
exceptions, each with its reason), `verified`. None imports torch or transformers before a
function needs them.
"""

from __future__ import annotations

from trainer.models.tiny_any.build import build_tiny
from trainer.models.tiny_any.shrink import tiny_config
from trainer.models.tiny_any.verified import VERIFIED

__all__ = ["VERIFIED", "build_tiny", "tiny_config"]
