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
def medium_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaVA folder (random weights via save_pretrained, tiny processor) of ~156M params."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from trainer.models.tiny import build_processor, build_tokenizer
    from vlaunch_core.models.tiny_specs import get_tiny_spec, tiny_config_dict

    out = tmp_path_factory.mktemp("medium-llava")
    config = tiny_config_dict("llava")
    config["text_config"].update(MEDIUM_TEXT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(
            AutoConfig.for_model(**config), dtype=torch.float32
        )
    model.save_pretrained(out)
    del model
    spec = get_tiny_spec("llava")
    build_processor(spec, build_tokenizer(spec)).save_pretrained(out)
    return out
