"""The architectures whose tiny models pass `tests/models/test_tiny_models.py` (torch-free).

Each builds, loads back through the Auto classes, and trains a step on an image (and on a
video and on two images where its processor takes them) with gradients reaching the vision
tower, the projector and the language model. Every other architecture of transformers'
image-text-to-text mapping is listed with the reason in docs/models.md ("Architectures").
"""

from __future__ import annotations

VERIFIED = (
    "aya_vision",
    "cohere2_vision",
    "deepseek_vl",
    "exaone4_5",
    "gemma3",
    "gemma4",
    "glm46v",
    "glm4v",
    "glm4v_moe",
    "granite_docling",
    "hyperclovax_vision_v2",
    "idefics2",
    "idefics3",
    "internvl",
    "janus",
    "kimi_k25",
    "lfm2_vl",
    "lfm3_vl",
    "lighton_ocr",
    "llama4",
    "llava",
    "llava_next",
    "llava_next_video",
    "llava_onevision",
    "minicpm_ocr",
    "minicpmv4_6",
    "minicpmv4_7",
    "mistral3",
    "mistral_large4",
    "mllama",
    "molmo2",
    "muse_glimmer",
    "ovis2",
    "ovis2_5",
    "paddleocr_vl",
    "paligemma",
    "qianfan_ocr",
    "qwen2_5_vl",
    "qwen2_vl",
    "qwen3_5",
    "qwen3_5_moe",
    "qwen3_vl",
    "qwen3_vl_moe",
    "shieldgemma2",
    "smolvlm",
    "t5gemma2",
    "video_llama_3",
    "video_llava",
    "vipllava",
)
