"""The exact parts of the memory estimator, checked against real (tiny) models.

The estimator never loads a model: it counts from the model's description (built on the
meta device, `vlaunch_core.models.catalog`, as `vlaunch plan` gets it). Here each
count is compared with the truth after the tuning plan is applied to the real model:
trainable parameters per module, weight bytes (PeftModel's frozen originals included), and
AdamW state bytes after a real optimizer step.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.models.conftest import FAMILIES  # noqa: E402
from trainer.models.loading import load_model  # noqa: E402
from trainer.models.tuning import apply_tuning, param_groups  # noqa: E402
from vlaunch_core.estimator import Shape, TrainingSetup, estimate  # noqa: E402
from vlaunch_core.models.catalog import describe  # noqa: E402
from vlaunch_core.spec import ModelSpec, TuningSpec  # noqa: E402

PRESETS = ("lora_llm", "fft", "ln_vt", "lora_vt_llm", "fft_vt_lora_llm", "ln_vt_lora_llm", "fft_vt")
SHAPE = Shape(hidden=8, layers=1, intermediate=8, heads=1, kv_heads=1, vocab=8)


def _estimate(family: str, preset: str) -> tuple[dict[str, int], dict[str, int]]:
    fam = describe(ModelSpec(name_or_path=f"tiny:{family}"))
    assert fam is not None
    tuning = TuningSpec(preset=preset)
    setup = TrainingSetup(
        modes=tuning.modes(),
        precision="fp32",
        strategy="ddp",
        world_size=1,
        micro_batch_size=1,
        seq_len=16,
        gradient_checkpointing=False,
        is_gpu=False,
        lora_r=tuning.lora.r,
        lora_targets=fam.default_lora_targets,
        vision_lora_targets=fam.default_vision_lora_targets,
        unused_prefixes=fam.unused_prefixes,
        module_prefixes=fam.vision_tower + fam.projector,
    )
    est = estimate(fam.params, SHAPE, setup, capacity=1 << 40, headroom=0.1)
    return est.trainable_params, est.parts


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_exact_parts_match_the_real_model(family: str, preset: str) -> None:
    loaded = load_model(
        ModelSpec(name_or_path=f"tiny:{family}"), dtype="float32", with_processor=False
    )
    model, report = apply_tuning(loaded.model, loaded.family, TuningSpec(preset=preset))
    trainable, parts = _estimate(family, preset)

    real_trainable = {k: report.trainable.get(k, 0) for k in trainable}
    assert trainable == real_trainable
    assert report.trainable.get("other", 0) == 0

    real_weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert parts["weights"] == real_weight_bytes

    optimizer = torch.optim.AdamW(param_groups(model, report, lr=1e-3, weight_decay=0.0))
    n_grad_bytes = 0
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
            n_grad_bytes += p.grad.numel() * p.grad.element_size()
    optimizer.step()
    state_bytes = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for key, t in state.items()
        if key != "step"
    )
    assert parts["optimizer"] == state_bytes
    assert parts["gradients"] == n_grad_bytes
