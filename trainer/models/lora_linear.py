"""A LoRA Linear as one autograd function: peft's math in fewer passes over the activations.

peft's `lora.Linear` computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as five
modules and operators: the LoRA output, its scaled copy and the sum are three new
[tokens x out] tensors, and backward walks the same chain plus the sum of the two gradients
of `x`. `LoraLinearFunction` computes the same thing with the LoRA product added into the base
output in place (`addmm` into it, alpha = scaling), and backward adds the LoRA part of the
input's gradient into the base part in place.

Dropout, when the adapter has any and the module trains, draws its mask from torch's
generator (seeding, exact resume and checkpoint replay behave as before; the stream differs
from `nn.Dropout`'s). On the CPU, where `nn.Dropout` draws a double per element (about 10 ns
each), the mask comes from 64-bit integer draws read as four 16-bit values each: an element
is dropped with probability round(p * 65536) / 65536 (0.05 -> 0.0500031) and the kept ones
are scaled by 1 / (1 - that). On a GPU: uniform floats compared with p. Backward keeps the
mask as bools (peft's chain keeps it as floats).

`fuse_lora_linears(model)` switches every plain peft `lora.Linear` of a model to
`FusedLoraLinear` (a subclass: saving, merging and peft's own code see the same module). Its
`forward` takes the fused path only when it is exactly peft's vanilla LoRA on whole tensors,
and peft's own `forward` otherwise: adapters disabled or merged, several active adapters, a
variant (DoRA), a LoRA bias, mixed-adapter batches, a trainable base weight, fan-in-fan-out,
a quantized base layer (not a plain `nn.Linear`), parameters that are not plain tensors
(DeepSpeed ZeRO-3's partitioned ones, FSDP2's DTensors) or dtypes that disagree.
`tests/models/test_lora_linear.py` checks outputs and gradients against peft's.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch.nn import functional as F

from trainer.models.module_swap import is_plain, switch_class

_LEVELS = 1 << 16


def keep_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """(a bool mask of `x`'s shape, each element False with probability ~p, and 1 / the
    probability of True)."""
    if x.device.type != "cpu":
        keep = torch.rand(x.shape, device=x.device) >= p
        return keep, 1.0 / (1.0 - p)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    bits = draws.view(torch.int16)[:n].view(x.shape)  # uniform over the 65,536 values
    dropped = min(round(p * _LEVELS), _LEVELS - 1)
    return bits >= dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


class LoraLinearFunction(torch.autograd.Function):
    """`x W^T + b + scaling * dropout(x) A^T B^T` with a frozen base weight W."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
    ) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        keep: torch.Tensor | None = None
        scale = 1.0
        kept = x
        if p > 0.0:
            keep, scale = keep_mask(x, p)
            kept = x * keep
        xa = F.linear(kept, lora_a)  # dropout(x) A^T = (x * keep) A^T * scale: [tokens, r]
        if scale != 1.0:
            xa.mul_(scale)
        flat = out.view(-1, out.shape[-1])  # `out=` rather than addmm_: FLOP counters see it
        torch.addmm(flat, xa.reshape(-1, xa.shape[-1]), lora_b.t(), alpha=scaling, out=flat)
        ctx.save_for_backward(weight, lora_a, lora_b, kept, xa, keep)
        ctx.scaling, ctx.scale = scaling, scale
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, lora_a, lora_b, kept, xa, keep = ctx.saved_tensors
        need_x, _, need_bias, need_a, need_b, _, _ = ctx.needs_input_grad
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])
        gb = g @ lora_b  # [tokens, r]
        d_a = d_b = d_x = d_bias = None
        if need_b:
            d_b = (g.t() @ xa.reshape(-1, xa.shape[-1])).mul_(s)
        if need_a:
            d_a = (gb.t() @ kept.reshape(-1, kept.shape[-1])).mul_(s * ctx.scale)
        if need_bias and ctx.has_bias:
            d_bias = g.sum(0)
        if need_x:
            d_x = g @ weight
            if keep is None:
                torch.addmm(d_x, gb, lora_a, alpha=s, out=d_x)
            else:
                lora_x = gb @ lora_a
                lora_x.mul_(keep.reshape(lora_x.shape))
                d_x.add_(lora_x, alpha=s * ctx.scale)
            d_x = d_x.view(*grad.shape[:-1], d_x.shape[-1])
        return d_x, None, d_bias, d_a, d_b, None, None


class FusedLoraLinear(PeftLoraLinear):
    """peft's `lora.Linear` whose vanilla-LoRA forward runs as `LoraLinearFunction`."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        fused = self._fused_forward(x, args, kwargs)  # None: not plain LoRA, peft's path
        if fused is None:
            return super().forward(x, *args, **kwargs)
        return fused

    def _fused_forward(
        self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.Tensor | None:
        if args or kwargs or self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        active = self.active_adapters
        if len(active) != 1:
            return None
        name = active[0]
        if name not in self.lora_A or name in self.lora_variant or self.lora_bias.get(name):
            return None
        base = self.base_layer
        if type(base) is not torch.nn.Linear or base.weight.requires_grad:
            return None
        weight: torch.Tensor = base.weight
        bias: torch.Tensor | None = base.bias
        lora_a: torch.Tensor = cast(torch.Tensor, self.lora_A[name].weight)
        lora_b: torch.Tensor = cast(torch.Tensor, self.lora_B[name].weight)
        tensors = (x, weight, bias, lora_a, lora_b)
        if not all(is_plain(t) for t in tensors):
            return None
        dropout = self.lora_dropout[name]
        p = 0.0
        if isinstance(dropout, torch.nn.Dropout):
            p = float(dropout.p) if dropout.training else 0.0
        elif not isinstance(dropout, torch.nn.Identity):
            return None
        if p >= 1.0:
            return None
        device = x.device.type
        if torch.is_autocast_enabled(device):  # as autocast would run the Linears
            dtype = torch.get_autocast_dtype(device)
            x, weight, lora_a, lora_b = (t.to(dtype) for t in (x, weight, lora_a, lora_b))
            bias = bias.to(dtype) if bias is not None else None
        elif not all(t is None or t.dtype == x.dtype for t in tensors):
            return None
        with torch.autocast(device, enabled=False):
            out: torch.Tensor = LoraLinearFunction.apply(
                x, weight, bias, lora_a, lora_b, float(self.scaling[name]), p
            )
        return out


def fuse_lora_linears(model: torch.nn.Module) -> int:
    """Switch every plain peft `lora.Linear` of `model` to `FusedLoraLinear`; returns how
    many."""
    return switch_class(model, lambda m: type(m) is PeftLoraLinear, FusedLoraLinear)


def unfuse_lora_linears(model: torch.nn.Module) -> int:
    """The inverse of `fuse_lora_linears`: peft's own `lora.Linear` again (benchmarks compare
    with plain peft); returns how many."""
    return switch_class(model, lambda m: type(m) is FusedLoraLinear, PeftLoraLinear)
