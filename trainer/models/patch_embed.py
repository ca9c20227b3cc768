"""Patch embeddings that are a `Conv3d` over exactly one patch run as a matrix product.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, GLM-4.xV and others embed each flattened patch
with an `nn.Conv3d` whose kernel is the patch (stride = kernel, no padding): the input is
`[patches, channels, frames, height, width]` of exactly the kernel's size, so the
convolution has one output position and is `x.flatten(1) @ weight.flatten(1).T + bias`.
Convolution kernels are not made for that shape: on this CPU a `Conv3d` forward + backward
over 2,000 patches of 3 x 2 x 8 x 8 took 9.9 ms against 2.8 ms for the same `linear`, and
on GPUs some cuDNN versions pick very slow algorithms for it in bf16 (transformers issue
45750, vLLM and SGLang made the same switch).

`linear_patch_embeddings(model)` switches every such `nn.Conv3d` to `PatchConv3d`, a
subclass with the same parameters (same names, shapes and checkpoints; peft and the
strategies see a `Conv3d`). Its `forward` takes the `linear` path only when the input is
one patch per row and the parameters are whole plain tensors, and the convolution otherwise
(another input size, DeepSpeed ZeRO-3's partitioned parameters, FSDP2's DTensors).
transformers' own `fusion_config={"patch_embeddings": True}` does the same at load time but
renames the weight (`patch_embed.linear_proj`, a 2-D tensor), which every load path of
vlaunch (low-memory skeletons, ZeRO-3, resumes) would then have to map.
`tests/models/test_patch_embed.py` checks outputs and gradients against the convolution.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from trainer.models.module_swap import is_plain, switch_class


def _one_patch_conv(module: torch.nn.Module) -> bool:
    """An `nn.Conv3d` (exactly) whose windows never overlap nor pad."""
    return (
        type(module) is torch.nn.Conv3d
        and module.stride == module.kernel_size
        and module.padding in ((0, 0, 0), "valid")
        and module.dilation == (1, 1, 1)
        and module.groups == 1
    )


class PatchConv3d(torch.nn.Conv3d):
    """`nn.Conv3d` that computes a one-patch input as `linear` (same result, same
    parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if (
            x.dim() == 5
            and tuple(x.shape[2:]) == self.kernel_size
            and is_plain(x)
            and is_plain(weight)
            and is_plain(bias)
            and (x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type))
        ):
            return patches_as_linear(x, weight, bias)
        return super().forward(x)


def patches_as_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A convolution whose input `[n, c, *kernel]` is one window, as `linear`: `[n, out, 1,
    1, 1]`."""
    n, out = x.shape[0], weight.shape[0]
    return F.linear(x.reshape(n, -1), weight.reshape(out, -1), bias).view(n, out, 1, 1, 1)


def linear_patch_embeddings(model: torch.nn.Module) -> int:
    """Switch every one-patch `nn.Conv3d` of `model` to `PatchConv3d`; returns how many."""
    return switch_class(model, _one_patch_conv, PatchConv3d)


def conv_patch_embeddings(model: torch.nn.Module) -> int:
    """The inverse of `linear_patch_embeddings` (benchmarks compare with the model as
    transformers builds it); returns how many."""
    return switch_class(model, lambda m: type(m) is PatchConv3d, torch.nn.Conv3d)
