"""Packing: a packed row gives each sample exactly the logits it gets alone; padding too.

Every family in `PACKABLE` is checked with its tiny model (`tiny:<type>`, derived from
transformers' own classes), sdpa, vlaunch's per-sample sdpa (`trainer.models.packed_attention`)
and eager attention for two, a row of three image samples
of different sizes, a text-only sample and, where the model takes videos, a video sample.
Tolerance: 1e-5 absolute on fp32 logits (observed differences are up to 2e-6, summation
order).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data.collate import PACKABLE, Collator, packing_problem
from trainer.data.encode import IGNORE_INDEX, Encoded, SampleEncoder
from trainer.data.positions import rope_index
from trainer.models import packed_attention
from trainer.models.packed_attention import NAME as PACKED_SDPA
from trainer.models.packed_attention import use_packed_attention
from vlaunch_core.data.formats import parse_sample
from vlaunch_core.errors import UserError
from vlaunch_core.models.catalog import describe
from vlaunch_core.models.quirks import quirks_for
from vlaunch_core.spec import ModelSpec

ATOL = 1e-5


def _model(path: Path, attn: str) -> Any:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn)
    return model.train()  # as in training (the tiny models have no dropout)


def _items(proc: Any, *, text_only: bool = False, video: bool = False) -> list[Encoded]:
    """Three image samples of different sizes (and a text-only and a video sample)."""
    processor, family = proc
    enc = SampleEncoder(processor, family, max_length=4096)
    out = []
    questions = ["What colour is it?", "Which shape? Tell me in one word, please.", "Hi"]
    for i, q in enumerate(questions):
        s, _ = parse_sample(
            {
                "image": "a.png",
                "conversations": [
                    {"from": "human", "value": q},
                    {"from": "gpt", "value": "red " * (i + 1)},
                ],
            }
        )
        assert s is not None
        image = Image.new("RGB", (40 + 16 * i, 48), (60 * i, 100, 200))
        e = enc.encode(s, [image])
        assert e is not None
        out.append(e)
    assert len({e.length for e in out}) == 3
    if text_only:
        s, _ = parse_sample(
            {
                "conversations": [
                    {"from": "human", "value": "Say hi"},
                    {"from": "gpt", "value": "hi"},
                ]
            }
        )
        assert s is not None
        e = enc.encode(s)
        assert e is not None
        out.insert(1, e)
    if video:
        s, _ = parse_sample(
            {
                "video": "v.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nWhich way?"},
                    {"from": "gpt", "value": "left"},
                ],
            }
        )
        assert s is not None
        frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
        e = enc.encode(s, [], [frames])
        assert e is not None and "video_grid_thw" in e.tensors
        out.insert(2, e)
    return out


def _alone(model: Any, e: Encoded) -> torch.Tensor:
    inputs = {k: v for k, v in e.tensors.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits[0]


VIDEO = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"}
"""Families whose tiny model takes videos: a video sample joins the packed row."""
MROPE = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"}
CASES = (
    [(f, "sdpa") for f in sorted(PACKABLE)]
    + [(f, PACKED_SDPA) for f in sorted(PACKABLE)]
    + [("llava", "eager"), ("qwen2_vl", "eager")]
)
"""Every packable family with sdpa (transformers' block mask over the whole row) and with
vlaunch's per-sample sdpa (what a packed run uses); eager attention (its own mask path) for
two."""


@pytest.mark.parametrize(("family", "attn"), CASES)
def test_packed_logits_equal_one_by_one(
    any_tiny: Callable[[str], tuple[Path, Any]], family: str, attn: str
) -> None:
    path, proc = any_tiny(family)
    model = _model(path, "sdpa" if attn == PACKED_SDPA else attn)
    if attn == PACKED_SDPA:
        assert use_packed_attention(model)  # as `build_model` does for a packed run
    items = _items(proc, text_only=True, video=family in VIDEO)
    index = rope_index(model)
    assert (index is not None) == (family in MROPE)  # M-RoPE: the model's own index
    collator = Collator(proc[0].tokenizer.pad_token_id, proc[1], packing=True, rope_index=index)
    inputs = collator(items).inputs
    assert "attention_mask" not in inputs
    assert inputs["input_ids"].shape == (1, sum(e.length for e in items))
    split_before = packed_attention.state.split_calls
    skipped_before = packed_attention.state.masks_skipped
    with torch.no_grad():
        packed = model(
            **{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False
        ).logits[0]
        # vlaunch's path split every decoder layer's attention per sample; sdpa never did;
        # and it built no [tokens x tokens] mask for the row
        layers = model.config.get_text_config().num_hidden_layers
        split = packed_attention.state.split_calls - split_before
        assert split == (layers if attn == PACKED_SDPA else 0)
        skipped = packed_attention.state.masks_skipped - skipped_before
        assert (skipped >= 1) == (attn == PACKED_SDPA)
        start = 0
        for e in items:
            alone = _alone(model, e)
            torch.testing.assert_close(packed[start : start + e.length], alone, atol=ATOL, rtol=0)
            start += e.length


def test_sliding_window_layers_keep_their_mask_in_a_packed_row(
    any_tiny: Callable[[str], tuple[Path, Any]],
) -> None:
    """Qwen2-VL with a sliding window on its second layer (`use_sliding_window`): the full
    layer splits per sample with no mask built, the sliding one runs sdpa with transformers'
    packed sliding-window mask; each sample's logits still equal its own."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    path, proc = any_tiny("qwen2_vl")
    config = AutoConfig.from_pretrained(path)
    text = config.get_text_config()
    assert text.num_hidden_layers == 2
    text.use_sliding_window = True
    text.sliding_window = 8  # shorter than every sample
    text.layer_types = ["full_attention", "sliding_attention"]
    model = AutoModelForImageTextToText.from_pretrained(
        path, config=config, attn_implementation="sdpa"
    ).train()
    assert use_packed_attention(model)
    items = _items(proc, text_only=True)
    assert min(e.length for e in items) > text.sliding_window
    inputs = Collator(0, proc[1], packing=True, rope_index=rope_index(model))(items).inputs
    split_before = packed_attention.state.split_calls
    with torch.no_grad():
        packed = model(
            **{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False
        ).logits[0]
        assert packed_attention.state.split_calls - split_before == 1  # the full layer
        start = 0
        for e in items:
            torch.testing.assert_close(
                packed[start : start + e.length], _alone(model, e), atol=ATOL, rtol=0
            )
            start += e.length


def test_mrope_positions_are_each_samples_own(
    any_tiny: Callable[[str], tuple[Path, Any]],
) -> None:
    """Packed Qwen2-VL positions: text row 0..n-1 per sample (what transformers reads as
    sample boundaries), then exactly the 3-D positions the model computes for each alone."""
    path, proc = any_tiny("qwen2_vl")
    model = _model(path, "sdpa")
    items = _items(proc, text_only=True, video=True)
    index = rope_index(model)
    assert index is not None
    pos = Collator(0, proc[1], packing=True, rope_index=index)(items).inputs["position_ids"]
    assert pos.shape == (4, 1, sum(e.length for e in items))
    start = 0
    for e in items:
        span = pos[:, 0, start : start + e.length]
        assert span[0].tolist() == list(range(e.length))
        t = e.tensors
        want = model.model.compute_3d_position_ids(
            input_ids=t["input_ids"],
            inputs_embeds=torch.zeros(1, e.length, 1),
            image_grid_thw=t.get("image_grid_thw"),
            video_grid_thw=t.get("video_grid_thw"),
            attention_mask=t.get("attention_mask"),
            mm_token_type_ids=t.get("mm_token_type_ids"),
        )
        if want is None:  # text only: the model counts 0..n-1 on all three axes
            want = torch.arange(e.length).expand(3, 1, -1)
        assert torch.equal(span[1:], want[:, 0])
        start += e.length


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_padded_logits_equal_one_by_one(
    tiny_processor: Callable[[str], Any], tiny_path: Callable[[str], Path], family: str
) -> None:
    proc = tiny_processor(family)
    items = _items(proc)
    batch = Collator(proc[0].tokenizer.pad_token_id, proc[1])(items)
    model = _model(tiny_path(family), "sdpa")
    with torch.no_grad():
        out = model(
            **{k: v for k, v in batch.inputs.items() if k != "labels"}, use_cache=False
        ).logits
        for row, e in enumerate(items):
            torch.testing.assert_close(out[row, : e.length], _alone(model, e), atol=ATOL, rtol=0)
    assert batch.num_tokens == sum(e.length for e in items)
    assert batch.num_slots == 3 * max(e.length for e in items)


def test_packed_labels_and_positions(tiny_processor: Callable[[str], Any]) -> None:
    proc = tiny_processor("llava")
    items = _items(proc)
    batch = Collator(proc[0].tokenizer.pad_token_id, proc[1], packing=True)(items)
    pos = batch.inputs["position_ids"][0].tolist()
    labels = batch.inputs["labels"][0]
    start = 0
    for e in items:
        assert pos[start : start + e.length] == list(range(e.length))
        assert labels[start] == IGNORE_INDEX
        assert labels[start : start + e.length].tolist() == e.tensors["labels"][0].tolist()
        start += e.length
    assert batch.num_slots == batch.num_tokens  # no padding at all
    assert batch.num_label_tokens == sum(
        int((e.tensors["labels"] != IGNORE_INDEX).sum()) for e in items
    )


@pytest.mark.parametrize(
    ("family", "why"),
    [
        ("idefics3", "laid out per row"),
        ("mllama", "cross-attention"),
        ("paligemma", "prefix-LM"),
    ],
)
def test_families_that_cannot_be_packed_are_refused(family: str, why: str) -> None:
    fam = describe(ModelSpec(name_or_path=f"tiny:{family}"))
    assert packing_problem(fam) is not None
    with pytest.raises(UserError, match=f"data.packing is not supported for {family}") as e:
        Collator(0, fam, packing=True)
    assert why in e.value.message
    assert "data.packing=false" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("model_type", "why"),
    [("qwen3_5", "Gated DeltaNet"), ("qwen3_5_moe", "Gated DeltaNet"), ("gemma3", "bidirection")],
)
def test_quirks_say_why_newer_families_cannot_be_packed(model_type: str, why: str) -> None:
    """Measured once (packed logits differ from one by one: Qwen3.5 by up to 4.3, Gemma 3
    by 0.2); the reason is the family's quirk."""
    family = SimpleNamespace(name=model_type, quirks=quirks_for(model_type))
    problem = packing_problem(family)  # type: ignore[arg-type]
    assert problem is not None and why in problem


def test_unverified_families_are_refused_as_such() -> None:
    family = SimpleNamespace(name="some_new_vlm", quirks=quirks_for("some_new_vlm"))
    assert packing_problem(family) == "packing is not verified for some_new_vlm"  # type: ignore[arg-type]
