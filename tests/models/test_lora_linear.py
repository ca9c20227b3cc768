"""The fused LoRA Linear (`trainer.models.lora_linear`) computes what peft's `lora.Linear`
computes: outputs and gradients of every parameter and of the input, with and without
dropout, under CPU autocast, and peft's own path wherever the fused one does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from trainer.models import lora_linear
from trainer.models.loading import load_model
from trainer.models.lora_linear import (
    FusedLoraLinear,
    fuse_lora_linears,
    keep_mask,
    unfuse_lora_linears,
)
from trainer.models.tuning import apply_tuning
from vlaunch_core.spec import LoraOptions, ModelSpec, TuningSpec


class _Two(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(32, 48)
        self.b = torch.nn.Linear(48, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _pair(dropout: float, **lora: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(peft's model, the same model fused); lora_B random so that the LoRA part counts."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["a", "b"], **lora)  # type: ignore[arg-type]
    peft_model = get_peft_model(_Two(), config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    fused = copy.deepcopy(peft_model)
    assert fuse_lora_linears(fused) == 2
    return peft_model, fused


def _run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.square().sum().backward()
    assert x.grad is not None
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding: within 1e-5 of the tensor's largest value (the gradients
    are sums of hundreds of terms, some elements cancel down to far below the others)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


def _assert_same(
    got: tuple[torch.Tensor, torch.Tensor, dict], want: tuple[torch.Tensor, torch.Tensor, dict]
) -> None:
    _close(got[0], want[0])
    _close(got[1], want[1])
    assert got[2].keys() == want[2].keys() and want[2]
    for name in want[2]:
        _close(got[2][name], want[2][name])


def test_without_dropout_outputs_and_gradients_are_peft_s(fused_calls: list[int]) -> None:
    peft_model, fused = _pair(0.0)
    x = torch.randn(3, 5, 32)
    got = _run(fused, x)
    assert fused_calls == [2]  # the fused path ran for both layers
    _assert_same(got, _run(peft_model, x))


def test_with_dropout_outputs_and_gradients_are_peft_s_on_the_same_mask() -> None:
    """peft's module computes with the mask the fused path drew (same generator state)."""
    p = 0.3
    peft_model, fused = _pair(p)
    x = torch.randn(3, 5, 32)
    masks: list[torch.Tensor] = []

    def same_mask(t: torch.Tensor) -> torch.Tensor:  # peft's dropout, the fused path's mask
        keep, scale = keep_mask(t, p)
        masks.append(keep)
        return t * keep * scale

    torch.manual_seed(7)
    got = _run(fused, x)
    for module in peft_model.modules():
        if isinstance(module, PeftLoraLinear):
            module.lora_dropout["default"].forward = same_mask
    torch.manual_seed(7)
    want = _run(peft_model, x)
    assert len(masks) == 2 and not all(bool(m.all()) for m in masks)
    _assert_same(got, want)


def test_cpu_dropout_drops_p_of_the_elements_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    for p in (0.05, 0.5):
        keep, scale = keep_mask(x, p)
        dropped = 1.0 - keep.float().mean().item()
        sigma = (p * (1 - p) / x.numel()) ** 0.5
        assert keep.shape == x.shape and keep.dtype == torch.bool
        assert abs(dropped - p) < 6 * sigma
        assert scale == pytest.approx(1 / (1 - p), rel=1e-5)  # p to 1/65536
        assert (x * keep * scale).mean().item() == pytest.approx(1.0, abs=6 * sigma / (1 - p))
    a, b = keep_mask(x, 0.5)[0], keep_mask(x, 0.5)[0]
    assert not torch.equal(a, b)  # each call draws anew
    torch.manual_seed(3)
    c = keep_mask(x, 0.5)[0]
    torch.manual_seed(3)
    assert torch.equal(c, keep_mask(x, 0.5)[0])  # from torch's generator: seeding repeats it


def test_under_cpu_autocast_it_matches_peft_within_bf16(fused_calls: list[int]) -> None:
    peft_model, fused = _pair(0.0)
    x = torch.randn(4, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fused(x)
        assert fused_calls == [2] and y.dtype == torch.bfloat16
        want = peft_model(x)
    torch.testing.assert_close(y.float(), want.float(), rtol=0.05, atol=0.05)


def test_peft_s_own_path_wherever_the_fused_one_does_not_apply(fused_calls: list[int]) -> None:
    x = torch.randn(2, 32)
    _, fused = _pair(0.0)
    with fused.disable_adapter():  # type: ignore[operator]
        fused(x)
    fused.base_model.model.a.merge()  # type: ignore[union-attr,operator]
    fused(x)  # a merged: peft's path; b: fused
    assert fused_calls == [1]
    _, dora = _pair(0.0, use_dora=True)
    dora(x)
    assert fused_calls == [1]
    _, frozen_base = _pair(0.0)
    frozen_base.base_model.model.a.base_layer.weight.requires_grad_(True)  # type: ignore[union-attr]
    frozen_base(x)  # a's base trains: peft's path; b: fused
    assert fused_calls == [2]


def test_apply_tuning_fuses_the_language_model_s_lora_layers() -> None:
    loaded = load_model(ModelSpec(name_or_path="tiny:qwen2_5_vl"), with_processor=False)
    model, report = apply_tuning(
        loaded.model, loaded.family, TuningSpec(preset="lora_llm", lora=LoraOptions(r=4))
    )
    assert report.lora is not None
    matched = report.lora["targets"]["language_model"]["matched"]
    fused = [m for m in model.modules() if isinstance(m, FusedLoraLinear)]
    assert matched and len(fused) == len(matched)
    assert not [m for m in model.modules() if type(m) is PeftLoraLinear]
    # and back to peft's own module (the side-by-side benchmark's peers run it)
    assert unfuse_lora_linears(model) == len(matched)
    assert not [m for m in model.modules() if isinstance(m, FusedLoraLinear)]


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list: how many times `LoraLinearFunction` ran in the test."""
    real = lora_linear.LoraLinearFunction.apply
    count = [0]

    def counting(*args: object) -> object:
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(lora_linear.LoraLinearFunction, "apply", counting)
    return count
