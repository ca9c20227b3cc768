"""Tiny models of every verified architecture: built from transformers' own classes, loaded
back through the Auto classes, rendered with their chat template and trained one step.

Each architecture is built once per session (in a temporary folder). On two cores the whole
module takes about a minute and a half.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainer.models.tiny import VERIFIED, build_tiny
from trainer.models.tiny.check import (
    conversation,
    make_batch,
    media_token_ids,
    render,
    train_step,
)

NAMED = (
    "qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe", "gemma3", "gemma4", "internvl",
    "llava_onevision", "mistral3", "llama4", "glm4v", "lfm2_vl", "aya_vision",
    "llava", "llava_next", "llava_next_video", "qwen2_vl", "qwen2_5_vl", "idefics3",
    "paligemma", "mllama",
)  # fmt: skip
"""The architectures issue 14 names (smolvlm aside: its processor needs `num2words`)."""


@pytest.fixture(scope="session")
def tiny_any(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Any]]:
    """`tiny_any(model_type)`: (model, processor) loaded from the tiny folder, built once."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root = tmp_path_factory.mktemp("tiny_any")
    cache: dict[str, tuple[Any, Any]] = {}

    def get(model_type: str) -> tuple[Any, Any]:
        if model_type not in cache:
            path = build_tiny(model_type, root / model_type)
            cache[model_type] = (
                AutoModelForImageTextToText.from_pretrained(path),
                AutoProcessor.from_pretrained(path),
            )
        return cache[model_type]

    return get


def test_the_verified_list_covers_the_named_architectures() -> None:
    assert len(VERIFIED) >= 30
    assert set(NAMED) <= set(VERIFIED)
    assert len(set(VERIFIED)) == len(VERIFIED)


@pytest.mark.parametrize("model_type", VERIFIED)
def test_loads_as_the_architectures_own_classes(
    model_type: str, tiny_any: Callable[[str], tuple[Any, Any]]
) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    model, processor = tiny_any(model_type)
    assert type(model).__name__ == MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
    assert type(processor).__name__ == PROCESSOR_MAPPING_NAMES[model_type]
    assert model.config.model_type == model_type
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    vocab = len(processor.tokenizer)
    assert vocab <= model.get_input_embeddings().num_embeddings


@pytest.mark.parametrize("model_type", VERIFIED)
def test_chat_template_renders_prefixes_and_ends_answers(
    model_type: str, tiny_any: Callable[[str], tuple[Any, Any]]
) -> None:
    """What label masking needs (trainer/data/chat.py): a prefix of a conversation renders
    as a prefix of its rendering, the generation prompt is where an answer starts, and each
    answer ends with the end-of-turn token."""
    _, processor = tiny_any(model_type)
    messages = conversation(images=1)
    full = render(processor, messages)
    for k in range(1, len(messages)):
        assert full.startswith(render(processor, messages[:k]))
    prompt = render(processor, messages[:1], add_generation_prompt=True)
    assert full[len(prompt) :].startswith("red" + processor.tokenizer.eos_token)
    assert full.count(processor.tokenizer.eos_token) == len(messages)


@pytest.mark.parametrize("model_type", VERIFIED)
def test_trains_a_step_on_an_image(
    model_type: str, tiny_any: Callable[[str], tuple[Any, Any]]
) -> None:
    model, processor = tiny_any(model_type)
    _assert_step_reaches_every_part(model, make_batch(processor, images=1))


@pytest.mark.parametrize("model_type", VERIFIED)
def test_trains_a_step_on_two_images(
    model_type: str, tiny_any: Callable[[str], tuple[Any, Any]]
) -> None:
    model, processor = tiny_any(model_type)
    one = make_batch(processor, images=1)
    two = make_batch(processor, images=2)
    ids = media_token_ids(model.config)
    if ids:  # the second image adds its own tokens
        assert _count(two, ids) > _count(one, ids)
    _assert_step_reaches_every_part(model, two)


@pytest.mark.parametrize("model_type", VERIFIED)
def test_trains_a_step_on_a_video(
    model_type: str, tiny_any: Callable[[str], tuple[Any, Any]]
) -> None:
    model, processor = tiny_any(model_type)
    if getattr(processor, "video_processor", None) is None:
        pytest.skip(f"{model_type}: the processor takes no video")
    _assert_step_reaches_every_part(model, make_batch(processor, images=0, videos=1))


def _count(batch: dict[str, Any], ids: set[int]) -> int:
    return sum(int((batch["input_ids"] == i).sum()) for i in ids)


def _assert_step_reaches_every_part(model: Any, batch: dict[str, Any]) -> None:
    report = train_step(model, batch, media_token_ids(model.config))
    assert math.isfinite(report.loss)
    assert report.tokens < 1024  # tiny means tiny
    missing = {"vision", "projector", "language"} - set(report.grads)
    assert not missing, f"no gradient in {missing}; parts {report.params}"


def test_builds_are_deterministic(tmp_path: Path) -> None:
    import hashlib

    digests = []
    for name in ("a", "b"):
        out = build_tiny("qwen2_vl", tmp_path / name)
        digests.append(
            {
                f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(out.iterdir())
                if f.is_file()
            }
        )
    assert digests[0] == digests[1]
