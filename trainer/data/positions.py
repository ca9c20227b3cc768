"""Per-sample position ids of a packed row, from the model's own multimodal RoPE index.

Models with multimodal RoPE (M-RoPE: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, GLM-4V, ...)
place image and video tokens on a 3-D (time, height, width) grid and compute the positions of
a row with `get_rope_index` (on their inner model). A packed row must get, for each sample,
exactly the positions that sample gets alone, so `RopeIndex` calls the model class's own
`get_rope_index` on each sample in the collator (on the CPU, in the loader workers), without
the model: a stand-in object carries the config, and any other method it calls is the
class's own. The packed row's `position_ids` are `[4, 1, tokens]`: row 0 the text positions
(0..n-1 per sample), which is how transformers recognises packed sequences for these models
(a block-diagonal mask for sdpa/eager, varlen boundaries for flash-attention), rows 1-3 the
M-RoPE positions.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class _StandIn:
    """`self` for an unbound method of `cls` that reads only `self.config` and other methods."""

    def __init__(self, cls: type, config: Any) -> None:
        self._cls = cls
        self.config = config

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cls, name)  # AttributeError for anything not on the class
        return attr.__get__(self, self._cls) if hasattr(attr, "__get__") else attr


class RopeIndex:
    """A model's `get_rope_index` as a picklable function of one sample's tensors."""

    def __init__(self, cls: type, config: Any) -> None:
        self.cls = cls
        self.config = config
        params = inspect.signature(cls.get_rope_index).parameters  # type: ignore[attr-defined]
        self.keys = tuple(p for p in params if p not in ("self", "attention_mask", "kwargs"))

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """`[3, 1, length]` positions of one sample (a batch of one)."""
        import torch

        ids = tensors["input_ids"]
        kwargs = {k: tensors[k] for k in self.keys if k in tensors and k != "input_ids"}
        if "mm_token_type_ids" in self.keys and "mm_token_type_ids" not in kwargs:
            kwargs["mm_token_type_ids"] = torch.zeros_like(ids, dtype=torch.int)  # text only
        with torch.no_grad():
            stand_in = _StandIn(self.cls, self.config)
            positions, _ = self.cls.get_rope_index(stand_in, ids, **kwargs)  # type: ignore[attr-defined]
        result: torch.Tensor = positions.to(torch.long)
        return result

    def __repr__(self) -> str:
        return f"RopeIndex({self.cls.__name__})"


def rope_index(model: Any) -> RopeIndex | None:
    """The M-RoPE index of `model` (any wrapper: peft, DDP, ...), or None for 1-D positions."""
    for module in model.modules():
        if callable(getattr(type(module), "get_rope_index", None)):
            return RopeIndex(type(module), module.config)
    return None
