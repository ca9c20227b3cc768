"""The analytic parameter tables equal what transformers builds, for every family.

Each config is instantiated on the meta device (no memory, no weights) and its
`named_parameters()` compared name by name and shape by shape with `param_table`: the
memory estimator's exact parts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from vlaunch_core.models.arch_configs import ARCH_CONFIGS
from vlaunch_core.models.configs import model_config_dict
from vlaunch_core.models.families import FAMILIES, detect_family
from vlaunch_core.models.shape_parts import TEXT_DEFAULTS, VISION_DEFAULTS
from vlaunch_core.models.shapes import (
    counts_by_module,
    lora_param_count,
    lora_targets_matched,
    param_table,
)
from vlaunch_core.models.tiny_specs import TINY_SPECS

MODELS = [f"tiny:{f}" for f in TINY_SPECS] + [f"random:{a}" for a in ARCH_CONFIGS]


def _meta_model(config: dict) -> torch.nn.Module:
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))


def test_every_family_has_a_tiny_model_and_two_real_architectures() -> None:
    real = {}
    for arch, config in ARCH_CONFIGS.items():
        real.setdefault(detect_family(config), []).append(arch)
    assert set(TINY_SPECS) == set(FAMILIES)
    assert {f: len(real.get(f, [])) >= 2 for f in FAMILIES} == dict.fromkeys(FAMILIES, True)


@pytest.mark.parametrize("name", MODELS)
def test_param_table_equals_meta_model(name: str) -> None:
    config = model_config_dict(name)
    model = _meta_model(config)
    real = {n: tuple(p.shape) for n, p in model.named_parameters()}
    table = param_table(config)
    analytic = {p.name: p.shape for p in table}
    assert len(analytic) == len(table)  # no duplicate names
    assert analytic == real
    family = FAMILIES[detect_family(config)]
    assert {p.module for p in table} == {"vision_tower", "projector", "language_model"}
    assert all(p.module == family.module_of(p.name) for p in table)
    totals = counts_by_module(table)
    assert sum(totals.values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name",
    ["random:qwen2-vl-2b", "random:llava-1.5-7b", "random:llama-3.2-11b-vision", "tiny:idefics3"],
)
def test_lora_count_follows_peft_matching_on_the_real_modules(name: str) -> None:
    config = model_config_dict(name)
    family = FAMILIES[detect_family(config)]
    model = _meta_model(config)
    targets = family.default_lora_targets
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    import re

    matched = {n for n in linear if re.fullmatch(targets, n)}
    assert {
        p.name.removesuffix(".weight") for p in lora_targets_matched(param_table(config), targets)
    } == matched
    assert all(family.module_of(n) == "language_model" for n in matched)
    expected = sum(8 * (linear[n].in_features + linear[n].out_features) for n in matched)
    assert lora_param_count(param_table(config), targets, r=8) == expected
    names = ["q_proj", "v_proj"]  # a list matches by suffix, everywhere (peft semantics)
    assert {p.name for p in lora_targets_matched(param_table(config), names)} == {
        f"{n}.weight" for n in linear if n.endswith((".q_proj", ".v_proj"))
    }


def test_tied_embeddings_appear_once() -> None:
    tied = param_table(model_config_dict("random:qwen2-vl-2b"))
    untied = param_table(model_config_dict("random:qwen2-vl-7b"))
    assert "lm_head.weight" not in {p.name for p in tied}
    assert "lm_head.weight" in {p.name for p in untied}


@pytest.mark.parametrize("model_type", sorted(TEXT_DEFAULTS))
def test_text_defaults_match_transformers(model_type: str) -> None:
    config = AutoConfig.for_model(model_type)
    for key, value in TEXT_DEFAULTS[model_type].items():
        if key in ("qkv_bias", "sandwich_norms"):
            continue
        want = config.num_attention_heads if value == -1 else value
        assert getattr(config, key) == want, key


@pytest.mark.parametrize("model_type", sorted(VISION_DEFAULTS))
def test_vision_defaults_match_transformers(model_type: str) -> None:
    vision_type = {"qwen2_vl": "qwen2_vl_vision", "qwen2_5_vl": "qwen2_5_vl_vision"}.get(
        model_type, model_type
    )
    config = AutoConfig.for_model(vision_type)
    for key, value in VISION_DEFAULTS[model_type].items():
        assert getattr(config, key) == value, key


def test_shapes_and_configs_need_no_torch() -> None:
    code = (
        "import sys, json\n"
        "from vlaunch_core.models.configs import model_config_dict\n"
        "from vlaunch_core.models.shapes import param_table, counts_by_module\n"
        "t = param_table(model_config_dict('random:llava-1.5-7b'))\n"
        "print(json.dumps([sum(counts_by_module(t).values()),\n"
        "                  [m for m in ('torch', 'transformers') if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    total, heavy = json.loads(out.stdout)
    assert heavy == []
    assert 7.0e9 < total < 7.1e9  # LLaVA-1.5-7B
