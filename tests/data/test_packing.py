"""Packing: a packed row gives each sample exactly the logits it gets alone; padding too.

Tolerance: 1e-5 absolute on fp32 logits (observed differences are ~1e-7, summation order).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from trainer.data.collate import Collator, packing_problem
from trainer.data.encode import IGNORE_INDEX, Encoded, SampleEncoder
from vlaunch_core.data.formats import parse_sample
from vlaunch_core.errors import UserError
from vlaunch_core.models.catalog import describe
from vlaunch_core.spec import ModelSpec

ATOL = 1e-5


def _model(path: Path, attn: str) -> Any:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn)
    return model.train()  # as in training (the tiny models have no dropout)


def _items(proc: Any) -> list[Encoded]:
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
    return out


def _alone(model: Any, e: Encoded) -> torch.Tensor:
    inputs = {k: v for k, v in e.tensors.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits[0]


@pytest.mark.parametrize("family", ["llava", "llava_next"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_one_by_one(
    tiny_processor: Callable[[str], Any], tiny_path: Callable[[str], Path], family: str, attn: str
) -> None:
    proc = tiny_processor(family)
    items = _items(proc)
    batch = Collator(proc[0].tokenizer.pad_token_id, proc[1], packing=True)(items)
    inputs = batch.inputs
    assert "attention_mask" not in inputs
    assert inputs["input_ids"].shape == (1, sum(e.length for e in items))
    model = _model(tiny_path(family), attn)
    with torch.no_grad():
        packed = model(
            **{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False
        ).logits[0]
        start = 0
        for e in items:
            alone = _alone(model, e)
            torch.testing.assert_close(packed[start : start + e.length], alone, atol=ATOL, rtol=0)
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


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "idefics3", "mllama", "paligemma"])
def test_families_that_cannot_be_packed_are_refused(family: str) -> None:
    fam = describe(ModelSpec(name_or_path=f"tiny:{family}"))
    assert packing_problem(fam) is not None
    with pytest.raises(UserError, match=f"data.packing is not supported for {family}") as e:
        Collator(0, fam, packing=True)
    assert "data.packing=false" in (e.value.hint or "")
    if family.startswith("qwen"):
        assert "RoPE" in e.value.message
