"""What the fast modules that vlaunch swaps in share (`lora_linear.py`, `patch_embed.py`):
switching a module's class in place (same parameters, buffers and state dict), and the check
that a tensor is whole and plain before a fast path uses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch


def switch_class(
    model: torch.nn.Module, matches: Callable[[torch.nn.Module], bool], cls: type
) -> int:
    """Make every module of `model` that `matches` an instance of `cls` (a subclass or the
    base class of its own, so its state stays valid); returns how many."""
    count = 0
    for module in model.modules():
        if matches(module):
            cast(Any, module).__class__ = cls
            count += 1
    return count


def is_plain(t: torch.Tensor | None) -> bool:
    """`t` is None or a whole `torch.Tensor` / `nn.Parameter`: not a subclass such as FSDP2's
    `DTensor`, not a DeepSpeed ZeRO-3 parameter (`ds_id`: partitioned, gathered by hooks)."""
    return t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and not hasattr(t, "ds_id"))
