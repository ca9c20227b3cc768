"""A training step on a tiny model, through the chat template and processor, and what it
reached: the loss and which parts (vision tower, projector, language model) got gradients.

The test suite asserts on it; the sweep over every architecture (docs/models.md,
"Architectures") reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.models.tiny.media import sample_image, video_inputs

if TYPE_CHECKING:
    import torch
    from transformers import ProcessorMixin

PARTS = (
    ("projector", re.compile(
        r"multi_modal_projector|connector|merger|mm_projector|aligner|(^|\.)projector|"
        r"embed_vision|vision_projection|visual_projection|adapter|visual_embeddings_table"
    )),
    ("vision", re.compile(
        r"vision_tower|visual|vision_model|vision_encoder|image_encoder|vision_embed|"
        r"image_tower|video_tower"
    )),
    ("language", re.compile(r"language_model|text_model|(^|\.)llm\.|lm_head|embed_tokens")),
)  # fmt: skip
"""Part of a parameter, by the first pattern its name matches (a projector may sit inside
the vision module, as Qwen-VL's `visual.merger`)."""


def part_of(name: str) -> str | None:
    return next((part for part, pattern in PARTS if pattern.search(name)), None)


@dataclass
class StepReport:
    loss: float
    tokens: int
    """Length of the sequence."""
    media_tokens: int
    """Tokens of the sequence that are image / video placeholders."""
    grads: dict[str, int] = field(default_factory=dict)
    """Part -> number of its parameter tensors with a non-zero gradient."""
    params: dict[str, int] = field(default_factory=dict)
    """Part -> number of its parameter tensors."""


def conversation(images: int = 1, videos: int = 0) -> list[dict[str, Any]]:
    """A two-turn conversation; the first question shows the media."""
    media = [{"type": "image"}] * images + [{"type": "video"}] * videos
    return [
        {"role": "user", "content": [*media, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        {"role": "user", "content": [{"type": "text", "text": "And the background?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "dark grey"}]},
    ]


def render(
    processor: ProcessorMixin, messages: list[dict[str, Any]], add_generation_prompt: bool = False
) -> str:
    """The chat template's text: the processor's template, else the tokenizer's (processor
    classes whose `__init__` takes no `chat_template`, BLIP-2's, lose it on load; vlaunch's
    `ChatFormat` falls back the same way)."""
    if getattr(processor, "chat_template", None):
        text = processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    else:
        text = processor.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return str(text)


def make_batch(processor: ProcessorMixin, images: int = 1, videos: int = 0) -> dict[str, Any]:
    """The processor's batch for `conversation(images, videos)`, labels = input ids."""
    text = render(processor, conversation(images, videos))
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if images:
        kwargs["images"] = [sample_image(i) for i in range(images)]
    if videos:
        kwargs |= video_inputs(videos)
    batch = dict(processor(**kwargs))
    batch.pop("video_metadata", None)
    batch["labels"] = batch["input_ids"].clone()
    return batch


def train_step(model: torch.nn.Module, batch: dict[str, Any], media_ids: set[int]) -> StepReport:
    """Forward with labels and backward; which parts got gradients."""
    import torch

    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**as_model_dtype(batch, model))
    out.loss.backward()
    report = StepReport(
        loss=float(out.loss.detach()),
        tokens=int(batch["input_ids"].shape[-1]),
        media_tokens=int(sum(int((batch["input_ids"] == i).sum()) for i in media_ids)),
    )
    for name, p in model.named_parameters():
        part = part_of(name) or "other"
        report.params[part] = report.params.get(part, 0) + 1
        if p.grad is not None and bool(torch.any(p.grad != 0)):
            report.grads[part] = report.grads.get(part, 0) + 1
    return report


def as_model_dtype(batch: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Floating-point inputs in the model's dtype, as a training loop casts them (Llama 4's
    image processor returns bfloat16 pixels whatever the model's dtype)."""
    import torch

    dtype = next(model.parameters()).dtype
    return {
        k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in batch.items()
    }


def media_token_ids(config: Any) -> set[int]:
    """Ids of the tokens the model replaces by image / video features (from its config)."""
    keys = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
    return {v for k in keys if isinstance(v := getattr(config, k, None), int)}
