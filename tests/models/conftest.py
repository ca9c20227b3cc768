"""Fixtures of the model tests: tiny model folders (built once per session) and real batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FAMILIES = (
    "llava",
    "llava_next",
    "llava_next_video",
    "qwen2_vl",
    "qwen2_5_vl",
    "idefics3",
    "paligemma",
    "mllama",
)


@pytest.fixture(scope="session")
def tiny_path(model_cache: Path) -> Callable[[str], Path]:
    """`tiny_path(family)`: the folder of `tiny:<type>`, built on first use."""
    from trainer.models.tiny.folder import tiny_model_path

    return tiny_model_path


@pytest.fixture(scope="session")
def tiny_batch(model_cache: Path) -> Callable[[str], dict[str, Any]]:
    """`tiny_batch(family)`: a real batch of one image question and its answer, made by the
    family's own processor and chat template; labels are the input ids (cached per family)."""
    from PIL import Image, ImageDraw

    from trainer.models.loading import load_model
    from vlaunch_core.spec import ModelSpec

    cache: dict[str, dict[str, Any]] = {}

    def get(family: str) -> dict[str, Any]:
        if family not in cache:
            processor = load_model(ModelSpec(name_or_path=f"tiny:{family}")).processor
            assert processor is not None
            image = Image.new("RGB", (48, 40), (20, 20, 20))
            ImageDraw.Draw(image).ellipse((8, 6, 36, 32), fill=(220, 30, 30))
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
            ]
            text = processor.apply_chat_template(messages)
            batch = dict(processor(images=[image], text=[text], return_tensors="pt"))
            batch["labels"] = batch["input_ids"].clone()
            cache[family] = batch
        return {k: v.clone() for k, v in cache[family].items()}

    return get
