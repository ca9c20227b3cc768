"""LoRA options, one PeftModel for two parts, optimizer groups, the report, checkpointing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from trainer.models.loading import LoadedModel, load_model
from trainer.models.tuning import apply_tuning, param_groups
from trainer.models.tuning_report import TuningReport
from vlaunch_core.models.description import module_matches
from vlaunch_core.spec import LoraOptions, LrMultipliers, ModelSpec, TuningSpec


def _load(family: str = "llava") -> LoadedModel:
    return load_model(ModelSpec(name_or_path=f"tiny:{family}"), with_processor=False)


def test_target_names_are_scoped_to_the_language_model() -> None:
    loaded = _load()
    model, report = apply_tuning(
        loaded.model,
        loaded.family,
        TuningSpec(
            preset="lora_vt_llm",
            lora=LoraOptions(target_modules=["q_proj", "v_proj"], vision_target_modules=["fc1"]),
        ),
    )
    assert report.lora is not None
    llm = report.lora["targets"]["language_model"]["matched"]
    vit = report.lora["targets"]["vision_tower"]["matched"]
    assert llm and all(n.startswith("model.language_model.") for n in llm)
    assert {n.rsplit(".", 1)[1] for n in llm} == {"q_proj", "v_proj"}
    assert vit and all(n.startswith("model.vision_tower.") and n.endswith("mlp.fc1") for n in vit)
    # One PeftModel, one adapter, both parts.
    assert isinstance(model, PeftModel)
    assert list(model.peft_config) == ["default"]
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert {n.removeprefix("base_model.model.") for n in adapted} == set(llm) | set(vit)


def test_lora_options_reach_peft_and_counts_match_the_description() -> None:
    loaded = _load()
    table = loaded.family.params  # read off the model before peft wraps it
    tuning = TuningSpec(preset="lora_llm", lora=LoraOptions(r=4, dropout=0.0, use_dora=True))
    model, report = apply_tuning(loaded.model, loaded.family, tuning)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.use_dora) == (4, 8.0, True)  # alpha = 2r
    targets = loaded.family.default_lora_targets
    assert targets is not None
    matched = [
        p
        for p in table
        if p.kind == "linear"
        and p.name.endswith(".weight")
        and module_matches(p.name.removesuffix(".weight"), targets)
    ]
    lora = sum(4 * (p.shape[0] + p.shape[1]) + p.shape[0] for p in matched)  # r(in+out)+DoRA
    assert report.trainable["language_model"] == lora
    assert report.trainable["projector"] == sum(p.numel for p in table if p.module == "projector")


def test_layernorm_count_matches_the_description() -> None:
    loaded = _load("llava_next")  # its last vision layer is unused (vision_feature_layer=-2)
    unused = loaded.family.unused_prefixes
    table = loaded.family.params
    _, report = apply_tuning(loaded.model, loaded.family, TuningSpec(preset="ln_vt"))
    norms = sum(
        p.numel
        for p in table
        if p.module == "vision_tower"
        and p.kind == "norm"
        and not any(p.name == u or p.name.startswith(u + ".") for u in unused)
    )
    assert unused and report.trainable["vision_tower"] == norms
    assert report.frozen_unused == list(unused)


def test_param_groups_follow_the_lr_multipliers_and_skip_decay_on_norms_and_biases() -> None:
    loaded = _load()
    tuning = TuningSpec(
        preset="fft_vt_lora_llm", lr_multipliers=LrMultipliers(vision_tower=0.05, projector=2.0)
    )
    model, report = apply_tuning(loaded.model, loaded.family, tuning)
    groups = param_groups(model, report, lr=1e-3, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["vision_tower/decay"]["lr"] == pytest.approx(5e-5)
    assert by_name["projector/decay"]["lr"] == pytest.approx(2e-3)
    assert by_name["language_model/decay"]["lr"] == pytest.approx(1e-3)
    assert all(g["weight_decay"] == 0.0 for n, g in by_name.items() if n.endswith("no_decay"))
    assert all(g["weight_decay"] == 0.1 for n, g in by_name.items() if n.endswith("/decay"))
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad and (name.endswith(".bias") or "norm" in name):
            assert id(p) in no_decay, name
        elif p.requires_grad and p.ndim == 2:
            assert id(p) not in no_decay, name
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # each trainable parameter exactly once
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_report_prints_and_round_trips_as_json(tmp_path: Path) -> None:
    loaded = _load()
    _, report = apply_tuning(loaded.model, loaded.family, TuningSpec(preset="ln_vt_lora_llm"))
    text = report.render()
    assert "language_model" in text and "layernorm" in text and "LoRA r=16" in text
    path = report.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["trainable_params"] == report.trainable_params
    assert data["modes"] == {
        "vision_tower": "layernorm",
        "projector": "full",
        "language_model": "lora",
    }
    assert TuningReport.load(path) == report


def test_checkpointing_is_non_reentrant_and_gradients_flow(
    tiny_batch: Callable[[str], dict[str, Any]],
) -> None:
    loaded = _load()
    model, report = apply_tuning(
        loaded.model, loaded.family, TuningSpec(preset="lora_llm"), gradient_checkpointing=True
    )
    funcs = [
        m._gradient_checkpointing_func
        for m in model.modules()
        if getattr(m, "gradient_checkpointing", False)
    ]
    assert funcs and all(f.keywords["use_reentrant"] is False for f in funcs)
    assert report.gradient_checkpointing
    model.train()
    model(**tiny_batch("llava")).loss.backward()
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_saved_adapter_restores_projector_and_norms(
    tmp_path: Path,
    tiny_batch: Callable[[str], dict[str, Any]],
) -> None:
    """modules_to_save puts the trained projector and vision norms in the adapter."""
    loaded = _load()
    tuning = TuningSpec(preset="ln_vt_lora_llm")
    model, report = apply_tuning(loaded.model, loaded.family, tuning)
    assert "model.multi_modal_projector" in report.modules_to_save
    assert report.trained_outside_adapter == []
    with torch.no_grad():  # make the trained state differ from the base model
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    batch = tiny_batch("llava")
    with torch.no_grad():
        want = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    restored = PeftModel.from_pretrained(_load().model, tmp_path / "adapter").eval()
    with torch.no_grad():
        got = restored(**batch).logits
    torch.testing.assert_close(got, want)


def test_bare_parameters_trained_next_to_lora_are_reported() -> None:
    loaded = _load("llava_next")
    _, report = apply_tuning(loaded.model, loaded.family, TuningSpec(preset="lora_llm"))
    assert report.trained_outside_adapter == ["model.image_newline"]
