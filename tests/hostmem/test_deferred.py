"""Low-memory loading builds the same model as `from_pretrained`: the skeleton's weights, read
from the checkpoint (frozen) or kept in memory (adapters, trained parameters), equal the
normal path's bit for bit, LoRA initialisation included."""

from __future__ import annotations

import logging

import pytest
import torch

from trainer.models.deferred import (
    deferred_weights,
    from_checkpoint,
    is_placeholder,
    trainable_fp32,
)
from trainer.models.loading import load_model
from trainer.models.tuning import apply_tuning
from vlaunch_core.spec import ModelSpec, TuningSpec


def _build(
    family: str, tuning: TuningSpec, dtype: str, low_memory: bool, materialize: bool = False
) -> torch.nn.Module:
    torch.manual_seed(7)  # the loop seeds before it loads; LoRA init draws from this RNG
    loaded = load_model(
        ModelSpec(name_or_path=f"tiny:{family}"), dtype=dtype, tuning=tuning, low_memory=low_memory
    )
    model, _ = apply_tuning(loaded.model, loaded.family, tuning)
    trainable_fp32(model, materialize=materialize)
    return model


@pytest.mark.parametrize(
    ("family", "preset", "dtype", "materialize"),
    [
        ("llava", "lora_llm", "float32", False),
        ("paligemma", "lora_llm", "float32", False),  # tied lm_head / embed_tokens
        ("qwen2_vl", "lora_vt_llm", "float32", False),
        ("llava", "fft_vt_lora_llm", "bfloat16", False),  # modules_to_save copies, fp32
        ("llava", "fft_vt_lora_llm", "bfloat16", True),  # ... read in full (resume)
        ("idefics3", "ln_vt_lora_llm", "bfloat16", False),
        ("llava", "fft", "bfloat16", False),  # every weight trained: all deferred
    ],
)
def test_skeleton_equals_from_pretrained(
    family: str, preset: str, dtype: str, materialize: bool
) -> None:
    tuning = TuningSpec(preset=preset)
    normal = _build(family, tuning, dtype, low_memory=False)
    skeleton = _build(family, tuning, dtype, low_memory=True, materialize=materialize)
    weights = deferred_weights(skeleton)
    assert weights is not None, "low-memory loading should apply to a safetensors folder"
    from_file = from_checkpoint(skeleton, weights)
    assert any(from_file.values())
    assert all(from_file.values()) == (preset == "fft")
    expected = dict(normal.named_parameters())
    assert set(expected) == set(from_file)
    for name, p in skeleton.named_parameters():
        if from_file[name]:
            assert is_placeholder(p), f"{name} was materialised before sharding"
            assert not (materialize and p.requires_grad), f"{name} should be read in full"
            value = weights.read_full(name, p.dtype)
        else:
            assert not is_placeholder(p), name
            value = p.detach()
        assert value.dtype == expected[name].dtype, name
        assert torch.equal(value, expected[name].detach()), name
        assert p.requires_grad == expected[name].requires_grad, name
    buffers = dict(normal.named_buffers())
    for name, b in skeleton.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert skeleton.training == normal.training


@pytest.mark.parametrize(
    ("name", "tuning", "reason"),
    [
        ("tiny:llava", TuningSpec(preset="lora_llm", lora={"use_dora": True}), "DoRA"),
        ("random:smolvlm-256m", TuningSpec(preset="lora_llm"), None),
    ],
)
def test_falls_back_to_the_full_model_and_says_why(
    name: str, tuning: TuningSpec, reason: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trainer.models.loading"):
        loaded = load_model(ModelSpec(name_or_path=name), tuning=tuning, low_memory=True)
    assert deferred_weights(loaded.model) is None
    assert not any(is_placeholder(p) for p in loaded.model.parameters())
    if reason is not None:
        assert reason in caplog.text and "every rank loads the full model" in caplog.text
