"""The model layer derived from the model itself: parts, layer stacks, LoRA targets and
shapes read off a meta-device model, for the tiny models and for real published configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.models.conftest import FAMILIES
from vlaunch_core.errors import UserError
from vlaunch_core.models.catalog import describe
from vlaunch_core.models.description import ModelDescription, part_of
from vlaunch_core.spec import ModelSpec

#: Published checkpoints whose config.json ships with vlaunch (vlaunch_core/models/known/):
#: their text_config relies on transformers' defaults (the 7B ones omit hidden_size and the
#: layer count), so the planner must get the sizes from the model, not from the JSON.
REAL = (
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-1.5-13b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-hf/LLaVA-NeXT-Video-7B-hf",
    "Qwen/Qwen2-VL-7B-Instruct",
)


def _describe(name: str) -> ModelDescription:
    d = describe(ModelSpec(name_or_path=name))
    assert d is not None
    return d


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_is_in_exactly_one_part(family: str) -> None:
    d = _describe(f"tiny:{family}")
    counts = d.counts()
    assert counts["other"] == 0, [p.name for p in d.params if p.module == "other"]
    assert all(counts[part] > 0 for part in ("vision_tower", "projector", "language_model"))
    assert sum(counts.values()) == sum(p.numel for p in d.params)
    # layer stacks: one for the language model, at least one for the vision tower
    assert {s.part for s in d.stacks} >= {"vision_tower", "language_model"}
    for part in ("vision_tower", "language_model"):
        regex = d.lora_targets(part)
        assert regex is not None
        linears = [p.name.removesuffix(".weight") for p in d.params if p.kind == "linear"]
        hit = [n for n in linears if re.fullmatch(regex, n)]
        assert hit and all(d.module_of(n) == part for n in hit)


def test_nested_and_bare_parts() -> None:
    qwen = _describe("tiny:qwen2_vl")
    assert qwen.projector == ("model.visual.merger",)  # inside the vision tower's module
    assert qwen.module_of("model.visual.blocks.0.attn.qkv.weight") == "vision_tower"
    nxt = _describe("tiny:llava_next")
    assert nxt.module_of("model.image_newline") == "projector"  # a quirk: a bare parameter
    assert part_of("model.image_newline") == "other"  # what the names alone say


def test_llava_style_unused_vision_layers_follow_the_feature_layer() -> None:
    d = _describe("tiny:llava_next")  # vision_feature_layer -2 of 3 layers
    stack = next(s for s in d.stacks if s.part == "vision_tower")
    assert f"{stack.prefix}.{stack.count - 1}" in d.unused_prefixes
    assert f"{stack.prefix}.{stack.count - 2}" not in d.unused_prefixes


def test_description_round_trips_through_json() -> None:
    d = _describe("tiny:mllama")
    again = ModelDescription.from_json(json.loads(json.dumps(d.to_json())))
    assert again == d
    assert "MllamaCrossAttentionDecoderLayer" in again.layer_classes


@pytest.mark.parametrize("name", REAL)
def test_real_configs_give_exact_shapes(name: str) -> None:
    """The planner's parameter table equals the meta-device model's own count, and the
    activation sizes come from the model's config with transformers' defaults filled in
    (the 7B configs do not write hidden_size or the layer count)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vlaunch_core.models.configs import model_config_dict

    d = _describe(name)
    config = AutoConfig.for_model(**model_config_dict(name))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert sum(p.numel for p in d.params) == sum(p.numel() for p in model.parameters())
    text = model.config.get_text_config()
    assert (d.text.hidden, d.text.layers) == (text.hidden_size, text.num_hidden_layers)
    assert d.text.hidden > 0 and d.text.layers > 0 and d.vision.layers > 0


def _plan(name: str, profile: str, gpus: int, strategy: str) -> object:
    from vlaunch_core.plan import make_plan
    from vlaunch_core.spec_load import spec_from_dict

    spec = spec_from_dict(
        {
            "name": "x",
            "model": {"name_or_path": name},
            "data": {"mixture": "x", "max_length": 2048},
            "tuning": {"preset": "lora_llm"},
            "train": {
                "global_batch_size": 64,
                "micro_batch_size": "auto",
                "strategy": strategy,
                "gradient_checkpointing": True,
            },
            "resources": {"profile": profile, "gpus_per_node": gpus},
        },
        check=False,
    )
    return make_plan(spec)


@pytest.mark.parametrize("name", REAL)
def test_plans_of_real_configs_keep_activations(name: str) -> None:
    plan = _plan(name, "rtx3090ti", 2, "zero3")
    memory = plan.memory  # type: ignore[attr-defined]
    assert memory.parts["activations"] > 0
    # LoRA with ZeRO-3 on 2 x 24 GB: a 7B/8B model fits (sharded weights ~ 4 GB per device)
    if "13b" not in name:
        assert plan.fits, memory.parts  # type: ignore[attr-defined]


def test_auto_micro_batch_grows_with_free_memory_not_with_missing_sizes() -> None:
    small = _plan("llava-hf/llava-1.5-7b-hf", "a100-80gb", 8, "ddp").batch.micro_batch_size  # type: ignore[attr-defined]
    big = _plan("llava-hf/llava-1.5-13b-hf", "a100-80gb", 8, "ddp").batch.micro_batch_size  # type: ignore[attr-defined]
    assert big <= small <= 2 * big


def test_vila_layout_and_non_vlms_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from launcher.cli import main

    vila = tmp_path / "vila"
    vila.mkdir()
    (vila / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    job = tmp_path / "job.yaml"
    job.write_text(f"name: v\nmodel:\n  name_or_path: {vila}\ndata:\n  mixture: x\n")
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "llava_llama" in err and "NVILA-8B-hf" in err

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    job.write_text(f"name: b\nmodel:\n  name_or_path: {bert}\ndata:\n  mixture: x\n")
    assert main(["validate", str(job)]) == 2
    assert "no image-text-to-text model for model_type 'bert'" in capsys.readouterr().err


def test_an_unknown_tiny_model_type_is_a_user_error_with_the_nearest_names() -> None:
    """The core takes `tiny:<type>` as written (torch-free, it cannot know transformers'
    architectures); the training side, which describes the model, refuses a type that is not
    an image-text-to-text architecture of transformers."""
    with pytest.raises(UserError) as err:
        describe(ModelSpec(name_or_path="tiny:lava"))
    assert err.value.message.startswith("unknown tiny model type 'lava'. Did you mean 'llava'")
    assert "tiny:<model_type>" in (err.value.hint or "")
