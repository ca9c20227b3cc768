"""vlaunch's packed sdpa builds no [tokens x tokens] mask for a packed row's causal attention,
and gives every other mask (and every layer that cannot split) what transformers' sdpa would.

The masks come from transformers' own entry points (`create_causal_mask` and friends) with a
text config whose attention is `trainer.models.packed_attention.NAME`, compared with the same
calls under `sdpa`. Whole models, packed against one by one: `tests/data/test_packing.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    create_sliding_window_causal_mask,
)

from trainer.models import packed_attention
from trainer.models.packed_attention import (
    block_causal_mask,
    packed_sdpa_attention,
    register,
    sample_bounds,
)

SIZES = (4, 5, 3)
LENGTH = sum(SIZES)
BOUNDS = (0, 4, 9, 12)


def _packed_positions() -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in SIZES])[None]


def _config(attn: str, sliding_window: int | None = None) -> Any:
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1)
    config.sliding_window = sliding_window
    config._attn_implementation = attn
    return config


def _mask(make: Callable[..., Any], attn: str, **kw: Any) -> torch.Tensor | None:
    register()
    window = kw.pop("sliding_window", None)
    batch = kw.pop("batch", 1)
    embeds = torch.zeros(batch, LENGTH, 8)
    mask: torch.Tensor | None = make(_config(attn, window), embeds, cache=None, **kw)
    return mask


def test_sample_bounds_are_where_positions_restart() -> None:
    assert sample_bounds(_packed_positions(), LENGTH) == BOUNDS
    assert sample_bounds(torch.arange(LENGTH)[None], LENGTH) == (0, LENGTH)


def test_no_mask_for_a_packed_rows_causal_attention() -> None:
    before = packed_attention.state.masks_skipped
    pos = _packed_positions()
    assert (
        _mask(create_causal_mask, packed_attention.NAME, attention_mask=None, position_ids=pos)
        is None
    )
    assert packed_attention.state.masks_skipped == before + 1
    # what it stands for: the block mask sdpa gets, which the layers rebuild when they need it
    full = _mask(create_causal_mask, "sdpa", attention_mask=None, position_ids=pos)
    assert full is not None
    assert torch.equal(full, block_causal_mask(BOUNDS, torch.device("cpu")))


@pytest.mark.parametrize(
    "case",
    ["sliding window", "padding mask", "bidirectional", "batch of two"],
)
def test_every_other_mask_is_sdpas_own(case: str) -> None:
    pos = _packed_positions()
    padding = torch.ones(1, LENGTH, dtype=torch.long)
    padding[0, -2:] = 0
    make: Callable[..., Any]
    make, kw = {
        "sliding window": (
            create_sliding_window_causal_mask,
            {"attention_mask": None, "position_ids": pos, "sliding_window": 3},
        ),
        "padding mask": (create_causal_mask, {"attention_mask": padding, "position_ids": None}),
        "bidirectional": (create_bidirectional_mask, {"attention_mask": None, "position_ids": pos}),
        "batch of two": (
            create_causal_mask,
            {"attention_mask": None, "position_ids": pos.expand(2, -1), "batch": 2},
        ),
    }[case]
    before = packed_attention.state.masks_skipped
    ours = _mask(make, packed_attention.NAME, **dict(kw))
    theirs = _mask(make, "sdpa", **dict(kw))
    assert theirs is not None
    assert ours is not None and torch.equal(ours, theirs)
    assert packed_attention.state.masks_skipped == before


def _qkv(heads: int = 2, dim: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, heads, LENGTH, dim, generator=g) for _ in range(3))


def test_a_layer_that_cannot_split_gets_the_block_mask_back() -> None:
    """A position bias (T5-style, a layer's own) keeps a layer from splitting per sample; with
    the row's mask skipped it must still see its own sample only."""
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    query, key, value = _qkv()
    bias = torch.randn(1, 2, LENGTH, LENGTH, generator=torch.Generator().manual_seed(1))
    before = packed_attention.state.split_calls
    out, _ = packed_sdpa_attention(
        module, query, key, value, None, position_ids=_packed_positions(), position_bias=bias
    )
    assert packed_attention.state.split_calls == before  # it did not split
    want = torch.cat(
        [
            sdpa_attention_forward(
                module,
                query[:, :, s:e],
                key[:, :, s:e],
                value[:, :, s:e],
                None,
                is_causal=True,
                position_bias=bias[:, :, s:e, s:e],
            )[0]
            for s, e in itertools.pairwise(BOUNDS)
        ],
        dim=1,
    )
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_a_causal_layer_splits_per_sample() -> None:
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    query, key, value = _qkv()
    before = packed_attention.state.split_calls
    out, _ = packed_sdpa_attention(
        module, query, key, value, None, position_ids=_packed_positions()
    )
    assert packed_attention.state.split_calls == before + 1
    want, _ = sdpa_attention_forward(
        module, query, key, value, block_causal_mask(BOUNDS, torch.device("cpu"))
    )
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
