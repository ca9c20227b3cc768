"""One-patch `Conv3d` embeddings as a matrix product (`trainer.models.patch_embed`): the
vision towers of the Conv3d families give the same features and the same gradients as with
transformers' convolution, the parameters and checkpoints do not change, and any other
input runs the convolution itself."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from trainer.models import patch_embed
from trainer.models.loading import load_model
from trainer.models.patch_embed import (
    PatchConv3d,
    conv_patch_embeddings,
    linear_patch_embeddings,
)
from vlaunch_core.spec import ModelSpec

CONV3D_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "glm4v")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding: within 1e-4 of the tensor's largest value. The two sum
    the same products in another order; Qwen3.5's recurrent layers carry that difference to
    about 2e-5 (measured), the other families stay near 1e-7."""
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(b.detach().abs().max()) + 1e-12)


@pytest.mark.parametrize("family", CONV3D_FAMILIES)
def test_loss_and_gradients_equal_the_convolution(
    family: str, tiny_batch: Any, linear_calls: list[int]
) -> None:
    model = load_model(ModelSpec(name_or_path=f"tiny:{family}"), with_processor=False).model
    model.train()
    fast = copy.deepcopy(model)
    keys = {k: v.shape for k, v in fast.state_dict().items()}
    assert linear_patch_embeddings(fast) == 1
    assert {k: v.shape for k, v in fast.state_dict().items()} == keys  # checkpoints unchanged
    batch = tiny_batch(family)
    runs = []
    for m in (model, fast):
        torch.manual_seed(0)
        out = m(**batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        runs.append((out.logits.detach(), grads))
    assert linear_calls == [1]  # one image, one patch embedding: the matrix product
    _close(runs[1][0], runs[0][0])
    embed = [n for n in runs[0][1] if "patch_embed" in n]
    assert embed and runs[1][1].keys() == runs[0][1].keys()
    for name, grad in runs[0][1].items():
        _close(runs[1][1][name], grad)


def test_other_inputs_and_convolutions_keep_the_convolution(linear_calls: list[int]) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 8, kernel_size=(2, 4, 4), stride=(2, 4, 4), bias=True)
    fast = copy.deepcopy(conv)
    assert linear_patch_embeddings(fast) == 1 and type(fast) is PatchConv3d
    one = torch.randn(5, 3, 2, 4, 4)
    _close(fast(one), conv(one))
    assert linear_calls == [1]
    volume = torch.randn(2, 3, 4, 8, 8)  # several windows: a real convolution
    assert torch.equal(fast(volume), conv(volume))
    assert linear_calls == [1]
    overlapping = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, kernel_size=2, stride=1), torch.nn.Conv2d(3, 8, 4, stride=4)
    )
    assert linear_patch_embeddings(overlapping) == 0
    assert conv_patch_embeddings(fast) == 1 and type(fast) is torch.nn.Conv3d


def test_build_model_uses_it_and_the_benchmark_can_undo_it(tmp_path: Any) -> None:
    from trainer.api import build_model
    from vlaunch_core.spec_load import load_spec

    job = tmp_path / "job.yaml"
    job.write_text(
        "name: pe\nmodel: {name_or_path: 'tiny:qwen2_5_vl'}\n"
        "data: {datasets: {d: {data_path: d.json}}, mixture: d}\ntuning: {preset: lora_llm}\n"
        f"output: {{dir: '{tmp_path}'}}\n"
    )
    built = build_model(load_spec(job), "fp32", require_processor=False)
    convs = [m for m in built.model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(type(m) is PatchConv3d for m in convs)
    assert conv_patch_embeddings(built.model) == len(convs)


@pytest.fixture
def linear_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list: how many times a `PatchConv3d` took the `linear` path."""
    real = patch_embed.patches_as_linear
    count = [0]

    def counting(*args: Any) -> torch.Tensor:
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(patch_embed, "patches_as_linear", counting)
    return count
