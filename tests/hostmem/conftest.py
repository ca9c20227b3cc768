"""Fixtures of the host-memory tests: a small shapes dataset and a
~156M-parameter LLaVA-style model (big enough that one copy vs one shard is measurable)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    from tests.trainer.helpers import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), train=16, eval_=4)


MEDIUM_TEXT = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "initializer_range": 0.02,
}
"""The tiny LLaVA with a 12-layer, 1024-wide language model: 155.9M parameters, 624 MB fp32."""


@pytest.fixture(scope="session")
def medium_model(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path) -> Path:
    """A LLaVA folder (random weights via save_pretrained, the tiny LLaVA's processor) of
    ~156M params: the tiny LLaVA's config with a bigger language model."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("medium-llava")
    config = AutoConfig.from_pretrained(tiny_llava)
    for key, value in MEDIUM_TEXT.items():
        setattr(config.text_config, key, value)
    config.text_config.head_dim = MEDIUM_TEXT["hidden_size"] // MEDIUM_TEXT["num_attention_heads"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    del model
    AutoProcessor.from_pretrained(tiny_llava).save_pretrained(out)
    return out
