"""VLM family registry (torch-free metadata). Filled in by the models work (issue 4)."""

from __future__ import annotations

FAMILY_NAMES: tuple[str, ...] = (
    "llava",
    "llava_next",
    "llava_next_video",
    "qwen2_vl",
    "qwen2_5_vl",
    "idefics3",
    "paligemma",
    "mllama",
)
