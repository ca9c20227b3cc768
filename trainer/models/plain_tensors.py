"""Whether a tensor is whole and plain, for the fused modules' fast paths
(`lora_linear.py`, `patch_embed.py`): not a subclass such as FSDP2's `DTensor`, not a
DeepSpeed ZeRO-3 parameter (`ds_id`: partitioned, gathered by hooks around its module)."""

from __future__ import annotations

import torch


def is_plain(t: torch.Tensor | None) -> bool:
    """`t` is None, a `torch.Tensor` or an `nn.Parameter`, and not one of ZeRO-3's."""
    return t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and not hasattr(t, "ds_id"))
