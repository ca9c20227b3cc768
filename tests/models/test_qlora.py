"""QLoRA: the language model in 4-bit NF4, the rest in full precision; clear errors where it
cannot run. The CPU runs of every QLoRA preset are in test_tuning_matrix.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainer.models import quantization
from trainer.models.loading import load_model
from trainer.models.tuning import apply_tuning
from vlaunch_core.errors import UserError
from vlaunch_core.spec import ModelSpec, TuningSpec


@pytest.mark.gpu
def test_qlora_on_gpu_quantizes_only_the_language_model(
    tiny_batch: Callable[[str], dict[str, Any]],
) -> None:
    tuning = TuningSpec(preset="ln_vt_qlora_llm")
    loaded = load_model(
        ModelSpec(name_or_path="tiny:llava"),
        dtype="bfloat16",
        tuning=tuning,
        device="cuda",
        with_processor=False,
    )
    kinds = {
        (loaded.family.module_of(n), type(m).__name__)
        for n, m in loaded.model.named_modules()
        if type(m).__name__ in ("Linear", "Linear4bit")
    }
    assert ("language_model", "Linear4bit") in kinds
    assert ("vision_tower", "Linear4bit") not in kinds
    assert ("projector", "Linear4bit") not in kinds
    model, report = apply_tuning(loaded.model, loaded.family, tuning, gradient_checkpointing=True)
    assert report.quantized
    batch = {
        k: (v.to(torch.bfloat16) if v.is_floating_point() else v).cuda()
        for k, v in tiny_batch("llava").items()
    }
    model.train()
    model(**batch).loss.backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_qlora_without_bitsandbytes_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mock: bitsandbytes is installed here; hiding it is the only way to see this branch.
    monkeypatch.setattr(quantization, "bnb_devices", lambda: None)
    with pytest.raises(UserError) as err:
        load_model(ModelSpec(name_or_path="tiny:llava"), tuning=TuningSpec(preset="qlora_llm"))
    assert "bitsandbytes" in err.value.message
    assert "tuning.language_model=lora" in (err.value.hint or "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_qlora_without_a_gpu_kernel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mock: the installed bitsandbytes has CPU kernels; older ones (CUDA only) are simulated.
    monkeypatch.setattr(quantization, "bnb_devices", lambda: {"cuda"})
    with pytest.raises(UserError) as err:
        load_model(
            ModelSpec(name_or_path="tiny:llava"), tuning=TuningSpec(preset="lora_vt_qlora_llm")
        )
    assert "needs a CUDA GPU" in err.value.message
    assert "lora" in (err.value.hint or "")


def test_qlora_plan_on_an_unquantized_model_is_refused() -> None:
    loaded = load_model(ModelSpec(name_or_path="tiny:llava"), with_processor=False)
    if quantization.bnb_devices() is None:
        pytest.skip("bitsandbytes is not installed: the load itself is refused (tested above)")
    with pytest.raises(UserError, match="loaded unquantized"):
        apply_tuning(loaded.model, loaded.family, TuningSpec(preset="qlora_llm"))


def test_qlora_random_architecture_is_refused() -> None:
    if quantization.bnb_devices() is None:
        pytest.skip("bitsandbytes is not installed")
    with pytest.raises(UserError, match="pretrained weights"):
        load_model(
            ModelSpec(name_or_path="random:qwen2-vl-2b"), tuning=TuningSpec(preset="qlora_llm")
        )
