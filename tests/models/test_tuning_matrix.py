"""Every family x every preset: exactly the right parameters train, and only they get gradients.

The expected set is derived here from the family's part prefixes and plain rules (full part:
all of it; layernorm: the vision tower's LayerNorm/RMSNorm weights; LoRA: adapters on the
default target Linears), not from the code under test. QLoRA presets run where bitsandbytes
has 4-bit kernels for this machine (CPU included since bitsandbytes 0.48); the GPU variant is
in test_qlora.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.models.conftest import FAMILIES
from trainer.models.loading import load_model
from trainer.models.quantization import bnb_devices
from trainer.models.tuning import apply_tuning
from vlaunch_core.models.description import ModelDescription
from vlaunch_core.models.presets import PRESETS
from vlaunch_core.spec import ModelSpec, TuningSpec

QLORA_HERE = "cpu" in (bnb_devices() or set())
PLAIN = [p for p in PRESETS if PRESETS[p].language_model != "qlora"]
QLORA = [p for p in PRESETS if PRESETS[p].language_model == "qlora"]


def _canonical(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    name = name.replace(".modules_to_save.default.", ".").replace(".base_layer.", ".")
    return name


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def expected_plan(
    model: torch.nn.Module,
    family: ModelDescription,
    modes: dict[str, str],
) -> tuple[set[str], set[str]]:
    """(trainable parameter names, LoRA-adapted module names) for the unwrapped `model`."""
    unused = family.unused_prefixes
    trainable: set[str] = set()
    for name, _ in model.named_parameters():
        if _under(name, unused):
            continue
        mode = modes.get(family.module_of(name), "frozen")  # `other` (audio, generation heads)
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if mode == "full" or (mode == "layernorm" and _is_norm(owner)):
            trainable.add(name)
    lora: set[str] = set()
    for part, regex in (
        ("language_model", family.default_lora_targets),
        ("vision_tower", family.default_vision_lora_targets),
    ):
        if modes[part] not in ("lora", "qlora"):
            continue
        for name, module in model.named_modules():
            if (
                re.fullmatch(regex, name)
                and family.module_of(name) == part
                and not _under(name, unused)
                and "Linear" in type(module).__name__
            ):
                lora.add(name)
    return trainable, lora


def run_plan(
    family_name: str,
    preset: str,
    tiny_batch: Callable[[str], dict[str, Any]],
    *,
    dtype: str = "float32",
    checkpointing: bool = True,
) -> None:
    tuning = TuningSpec(preset=preset)
    loaded = load_model(
        ModelSpec(name_or_path=f"tiny:{family_name}"),
        dtype=dtype,
        tuning=tuning,
        with_processor=False,
    )
    family, model = loaded.family, loaded.model
    want_trainable, want_lora = expected_plan(model, family, tuning.modes())
    vision_before = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if family.module_of(n) == "vision_tower" and p.dtype.is_floating_point
    }

    model, report = apply_tuning(model, family, tuning, gradient_checkpointing=checkpointing)

    params = dict(model.named_parameters())
    lora_params = {n for n in params if ".lora_" in n}
    got_lora_modules = {_canonical(n).split(".lora_")[0] for n in lora_params}
    assert got_lora_modules == want_lora
    want_lora_params = {f"{m}.lora_{ab}.default.weight" for m in want_lora for ab in "AB"}
    got_trainable = {_canonical(n) for n, p in params.items() if p.requires_grad}
    assert got_trainable == want_trainable | want_lora_params
    assert not any(p.requires_grad for n, p in params.items() if ".original_module." in n)
    assert report.trainable_params == sum(p.numel() for p in params.values() if p.requires_grad)

    # Forward + backward on a real batch: gradients exactly on the trainable parameters.
    batch = tiny_batch(family_name)
    batch = {
        k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in batch.items()
    }
    model.train()
    model(**batch).loss.backward()
    for n, p in params.items():
        assert (p.grad is not None) == p.requires_grad, n
    # LoRA B starts at zero, so A's first gradient is zero: one step, then all are non-zero.
    optimizer = torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=0.1)
    optimizer.step()
    optimizer.zero_grad()
    model(**batch).loss.backward()
    dead = [
        n
        for n, p in params.items()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert dead == []
    optimizer.step()
    if tuning.modes()["vision_tower"] == "frozen":  # untouched, e.g. under lora_llm
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for n, before in vision_before.items():
            assert torch.equal(base.get_parameter(n), before), n


@pytest.mark.parametrize("preset", PLAIN)
@pytest.mark.parametrize("family", FAMILIES)
def test_plan_trains_exactly_the_planned_parameters(
    family: str, preset: str, tiny_batch: Callable[[str], dict[str, Any]]
) -> None:
    run_plan(family, preset, tiny_batch, checkpointing=preset in ("fft", "lora_vt_llm"))


@pytest.mark.skipif(not QLORA_HERE, reason="bitsandbytes without 4-bit CPU kernels")
@pytest.mark.parametrize(
    ("family", "preset"), [("llava", p) for p in QLORA] + [("qwen2_vl", "qlora_llm")]
)
def test_qlora_plan_on_cpu(
    family: str, preset: str, tiny_batch: Callable[[str], dict[str, Any]]
) -> None:
    run_plan(family, preset, tiny_batch, dtype="bfloat16")


@pytest.mark.parametrize("family", FAMILIES)
def test_unused_parameters_are_exactly_those_without_gradients(
    family: str, tiny_path: Callable[[str], Path], tiny_batch: Callable[[str], dict[str, Any]]
) -> None:
    """What the family declares unused (kept frozen) is what a full backward never reaches."""
    loaded = load_model(ModelSpec(name_or_path=f"tiny:{family}"), with_processor=False)
    model = loaded.model
    model.train()
    model(**tiny_batch(family)).loss.backward()
    no_grad = {
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    }
    unused = loaded.family.unused_prefixes
    declared = {n for n, _ in model.named_parameters() if _under(n, unused)}
    assert no_grad == declared
