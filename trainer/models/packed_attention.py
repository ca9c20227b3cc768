"""Attention of a packed row without its cross-sample blocks: SDPA once per sample.

A packed row (`data.packing`) holds several samples. With `sdpa`, transformers builds a
block-causal [tokens x tokens] mask from the restarting `position_ids` and SDPA computes the
whole square, most of it masked out: with four samples in a row, about three quarters of the
attention is thrown away. `NAME` is transformers' own `sdpa_attention_forward` called once per
sample with causal attention, which is what flash-attention's varlen kernel does on a GPU.

The boundaries are read as transformers reads them to build that mask
(`masking_utils.find_packed_sequence_indices`: a position that is not the previous one + 1
starts a sample). Everything else goes to plain `sdpa` with the mask transformers built for it:
padded batches, a vision tower's attention (not causal), decoding with a cache, sliding
windows, sinks and soft-capping.

That mask is [tokens x tokens] booleans (256 MiB for a 16k-token row, about three times that
while it is built: `bench/packed_mask.py`), and the per-sample path never reads it. So the
mask function registered under `NAME` (`packed_sdpa_mask`) builds none for the causal mask
of one packed row (the one case where transformers asks for a full mask only because the row
is packed); a layer that then cannot split (a bias, sink or soft cap of its own) gets that
block mask rebuilt from the positions, for the call only. Every other mask is `sdpa`'s own
(sliding windows included). `tests/data/test_packing.py` checks that each packable family's
packed logits equal the samples' own and that this path ran;
`tests/models/test_packed_attention.py` checks the masks.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import torch

NAME = "vlaunch_packed_sdpa"
"""The `attn_implementation` a packed run's model gets instead of `sdpa`."""

_NOT_SPLIT = ("sliding_window", "s_aux", "softcap", "position_bias")
"""Attention features the per-sample split does not reproduce: plain sdpa then."""


@dataclass
class _State:
    last: tuple[weakref.ref[torch.Tensor], tuple[int, ...]] | None = None
    """The boundaries of the last position ids seen (every layer of a forward gets the same
    tensor: they are read once per forward)."""
    split_calls: int = 0
    """Attention calls that ran split per sample (tests check that the path ran)."""
    masks_skipped: int = 0
    """Causal masks of a packed row not built (`packed_sdpa_mask`)."""


state = _State()


def register() -> str:
    """Register `NAME` with transformers (attention and mask functions) and return it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_sdpa_attention)
    AttentionMaskInterface.register(NAME, packed_sdpa_mask)
    return NAME


def packed_sdpa_mask(**kwargs: Any) -> torch.Tensor | None:
    """transformers' `sdpa_mask`, except None for the causal mask of one packed row.

    transformers calls a mask function with keywords only. The case skipped: one row, no
    padding mask, no cache (query and keys alike, no offsets), no sliding or chunked window
    (`local_size`), not a bidirectional mask (`create_bidirectional_mask` passes
    `allow_is_bidirectional_skip`), and transformers itself found a full mask necessary
    (`allow_is_causal_skip` False: packed positions; the families that can be packed add no
    other deviation, which `tests/data/test_packing.py` checks family by family)."""
    from transformers.masking_utils import sdpa_mask

    one_packed_row = (
        kwargs.get("batch_size") == 1
        and kwargs.get("attention_mask") is None
        and kwargs.get("local_size") is None
        and "allow_is_bidirectional_skip" not in kwargs
        and kwargs.get("allow_is_causal_skip") is False
        and _is_zero(kwargs.get("q_offset", 0))
        and _is_zero(kwargs.get("kv_offset", 0))
        and kwargs.get("q_length") == kwargs.get("kv_length")
    )
    if one_packed_row:
        state.masks_skipped += 1
        return None
    return sdpa_mask(**kwargs)


def _is_zero(offset: object) -> bool:
    return isinstance(offset, int) and offset == 0


def block_causal_mask(bounds: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The [1, 1, tokens, tokens] boolean causal mask transformers builds for a packed row
    (the one `packed_sdpa_mask` skips): each token sees the tokens before it in its own
    sample."""
    sizes = torch.tensor([e - s for s, e in itertools.pairwise(bounds)], device=device)
    sample = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)
    idx = torch.arange(bounds[-1], device=device)
    back = idx[:, None] - idx[None, :]
    return ((sample[:, None] == sample[None, :]) & (back >= 0))[None, None]


def use_packed_attention(model: Any) -> bool:
    """Switch a model loaded with `sdpa` to `NAME` (all its sub-models); False when the
    model cannot change its attention after loading (it keeps `sdpa`, still exact)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return False
    model.set_attn_implementation(register())
    return bool(model.config._attn_implementation == NAME)


def sample_bounds(position_ids: torch.Tensor | None, length: int) -> tuple[int, ...] | None:
    """(0, start of sample 2, ..., length) of a packed row of `length` tokens, or None when
    `position_ids` are not one row of that length (then nothing is split)."""
    if position_ids is None or tuple(position_ids.shape) != (1, length):
        return None
    if state.last is not None and state.last[0]() is position_ids:
        return state.last[1]
    pos = position_ids[0]
    starts = (pos[1:] != pos[:-1] + 1).nonzero().flatten() + 1
    bounds = (0, *(int(s) for s in starts.tolist()), length)
    state.last = (weakref.ref(position_ids), bounds)
    return bounds


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa, once per sample of a packed causal row (shapes: [batch, heads,
    tokens, dim] in, [batch, tokens, heads, dim] out, as `sdpa_attention_forward`)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    bounds = None
    if causal and query.shape[0] == 1 and key.shape[2] == length:
        bounds = sample_bounds(kwargs.get("position_ids"), length)
    if bounds is not None and any(kwargs.get(k) is not None for k in _NOT_SPLIT):
        if attention_mask is None and len(bounds) > 2:  # skipped by `packed_sdpa_mask`
            attention_mask = block_causal_mask(bounds, query.device)
        bounds = None
    if bounds is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    state.split_calls += 1
    parts = [
        sdpa_attention_forward(
            module,
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            None,
            dropout,
            scaling,
            True,
            **kwargs,
        )[0]
        for s, e in itertools.pairwise(bounds)
    ]
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)), None
