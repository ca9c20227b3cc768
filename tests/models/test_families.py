"""The family registry agrees with the real transformers modules of every family."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from vlaunch_core.errors import UserError
from vlaunch_core.models.configs import model_config_dict
from vlaunch_core.models.families import FAMILIES, FAMILY_NAMES, detect_family, get_family
from vlaunch_core.models.tiny_specs import TINY_SPECS

REAL = [
    "random:llava-next-mistral-7b",
    "random:granite-vision-3.2-2b",
    "random:smolvlm-256m",
    "random:paligemma2-3b-448",
    "random:llama-3.2-11b-vision",
]


def _meta(name: str) -> tuple[dict, torch.nn.Module]:
    config = model_config_dict(name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    return config, model


@pytest.mark.parametrize("name", [f"tiny:{f}" for f in TINY_SPECS] + REAL)
def test_parts_layers_and_targets_match_the_model(name: str) -> None:
    config, model = _meta(name)
    family = get_family(detect_family(config))
    assert type(model).__name__ == family.model_class or config["model_type"] == "smolvlm"
    parts = {family.module_of(n) for n, _ in model.named_parameters()}
    assert parts == {"vision_tower", "projector", "language_model"}
    # Layer classes for FSDP wrapping exist in the model, one text and one vision class at least.
    classes = {type(m).__name__ for m in model.modules()}
    wanted = family.layer_classes(config)
    assert set(wanted) <= classes
    owners = {family.module_of(n) for n, m in model.named_modules() if type(m).__name__ in wanted}
    assert owners == {"vision_tower", "language_model"}
    # Default LoRA targets: every attention/MLP Linear of every decoder layer, nothing else.
    for part, regex in (
        ("language_model", family.default_lora_targets),
        ("vision_tower", family.default_vision_lora_targets),
    ):
        hits = [n for n, m in model.named_modules() if re.fullmatch(regex, n)]
        assert hits and all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in hits)
        assert {family.module_of(n) for n in hits} == {part}
        layers = {re.match(r".*\.(?:layers|blocks)\.\d+", n).group(0) for n in hits}  # type: ignore[union-attr]
        assert len(layers) == len(
            {
                re.match(r".*\.(?:layers|blocks)\.\d+", n).group(0)  # type: ignore[union-attr]
                for n, m in model.named_modules()
                if type(m).__name__ in wanted and family.module_of(n) == part
            }
        )


def test_granite_vision_wraps_granite_layers() -> None:
    config = model_config_dict("random:granite-vision-3.2-2b")
    assert detect_family(config) == "llava_next"
    assert "GraniteDecoderLayer" in FAMILIES["llava_next"].layer_classes(config)


def test_detect_family_by_model_type() -> None:
    assert detect_family({"model_type": "smolvlm"}) == "idefics3"
    assert detect_family({"model_type": "qwen2_5_vl"}) == "qwen2_5_vl"
    with pytest.raises(UserError) as err:
        detect_family({"model_type": "qwen2vl"})
    assert "Did you mean 'qwen2_vl'" in err.value.message
    assert "model.family" in (err.value.hint or "")


def test_family_names_are_the_registry() -> None:
    assert tuple(FAMILIES) == FAMILY_NAMES
    assert {
        "llava",
        "llava_next",
        "llava_next_video",
        "qwen2_vl",
        "qwen2_5_vl",
        "idefics3",
        "paligemma",
        "mllama",
    } <= set(FAMILY_NAMES)


def test_peft_wrapped_names_map_to_their_part() -> None:
    family = FAMILIES["qwen2_vl"]
    assert family.module_of("base_model.model.model.visual.merger.mlp.0.weight") == "projector"
    assert (
        family.module_of("base_model.model.model.visual.blocks.0.attn.qkv.base_layer.weight")
        == "vision_tower"
    )
    assert (
        family.module_of(
            "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"
        )
        == "language_model"
    )
    assert (
        family.module_of(
            "base_model.model.model.visual.merger.modules_to_save.default.mlp.0.weight"
        )
        == "projector"
    )
