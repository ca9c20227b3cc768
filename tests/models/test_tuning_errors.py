"""User mistakes in a tuning plan are clear errors that say how to fix them."""

from __future__ import annotations

import pytest

from trainer.models.loading import LoadedModel, load_model
from trainer.models.tuning import apply_tuning
from vlaunch_core.errors import UserError
from vlaunch_core.spec import LoraOptions, ModelSpec, TuningSpec


def _load(family: str = "llava") -> LoadedModel:
    return load_model(ModelSpec(name_or_path=f"tiny:{family}"), with_processor=False)


def _tune(loaded: LoadedModel, **kwargs: object) -> UserError:
    lora = kwargs.pop("lora", {})
    tuning = TuningSpec(lora=LoraOptions(**lora), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserError) as err:
        apply_tuning(loaded.model, loaded.family, tuning)
    return err.value


def test_target_that_matches_nothing_names_the_real_layers() -> None:
    err = _tune(_load(), preset="lora_llm", lora={"target_modules": ["qkv_proj"]})
    assert "matches no Linear module of the language model" in err.message
    assert "q_proj" in (err.hint or "")  # lists the names that exist


def test_regex_reaching_a_frozen_vision_tower_is_refused() -> None:
    err = _tune(_load(), preset="lora_llm", lora={"target_modules": r".*\.(q_proj|v_proj)"})
    assert "reaches the vision tower" in err.message
    assert "model.vision_tower" in err.message
    assert "tuning.vision_tower=lora" in (err.hint or "")


def test_regex_reaching_the_projector_is_refused() -> None:
    err = _tune(
        _load(),
        preset="lora_llm",
        lora={"target_modules": r".*linear_1|model\.language_model\..*q_proj"},
    )
    assert "reaches the projector" in err.message


def test_vision_targets_reaching_the_language_model_are_refused() -> None:
    err = _tune(
        _load("qwen2_vl"), preset="lora_vt_llm", lora={"vision_target_modules": r".*\.(qkv|o_proj)"}
    )
    assert "vision_target_modules" in err.message
    assert "reaches the language model" in err.message


def test_target_that_is_not_a_linear_layer_is_refused() -> None:
    err = _tune(
        _load(),
        preset="lora_llm",
        lora={"target_modules": r"model\.language_model\.layers\.\d+\.self_attn"},
    )
    assert "cannot adapt" in err.message
    assert "LlamaAttention" in err.message


def test_invalid_regex_is_reported_as_such() -> None:
    err = _tune(_load(), preset="lora_llm", lora={"target_modules": "model.(language"})
    assert "invalid regex" in err.message


def test_empty_target_list_is_refused() -> None:
    err = _tune(_load(), preset="lora_llm", lora={"target_modules": []})
    assert "empty list" in err.message


def test_unknown_tiny_model_type_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unknown tiny model type 'lava'\. Did you mean 'llava'"):
        load_model(ModelSpec(name_or_path="tiny:lava"))


def test_nothing_to_train_is_refused() -> None:
    err = _tune(
        _load(), vision_tower="frozen", projector="frozen", language_model="frozen", preset=None
    )
    assert "trains no parameter" in err.message
