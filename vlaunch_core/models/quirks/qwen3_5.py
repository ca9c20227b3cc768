"""Qwen3.5: Qwen-VL's multimodal RoPE, and a language model that mixes full attention with
linear-attention (Gated DeltaNet) layers."""

from dataclasses import replace

from vlaunch_core.models.quirks.qwen_vl import QUIRKS as QWEN_VL

QUIRKS = replace(
    QWEN_VL,
    packing="its linear-attention (Gated DeltaNet) layers and their convolutions carry state "
    "from one packed sample into the next (transformers passes no sample boundaries to "
    "them outside flash-linear-attention kernels; measured: packed logits differ)",
    notes=(
        *QWEN_VL.notes,
        "linear-attention (Gated DeltaNet) layers between the full-attention ones",
    ),
)
