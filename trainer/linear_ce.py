"""Linear + cross-entropy without the [tokens x vocab] logits: the math of the fused loss.

`linear_cross_entropy(h, weight, bias, targets)` is `sum(CE(h @ weight.T + bias, targets))`
for rows `h` that all carry a target. It never holds more than one chunk of logits:

- `chunked` (any device): rows in chunks; per chunk the logits in the inputs' dtype, upcast to
  fp32, optional soft-capping `cap * tanh(z / cap)`, log-sum-exp, and right away the gradient
  of the chunk's loss with respect to its rows and to the weight (softmax minus one-hot),
  accumulated in fp32. The backward only scales these by the incoming gradient, so neither
  the logits nor the weight are needed after the forward: it runs where the weight is whole
  (inside the output layer's forward under FSDP and ZeRO-3).
- `liger` (CUDA, `pip install 'vlaunch[liger]'`): Liger-Kernel's fused linear cross-entropy
  Triton kernel, which works the same way; imported only when asked for, only on CUDA.

Numerics: against `F.cross_entropy(h @ w.T + b, reduction="sum")` on the same fp32 inputs the
loss and every gradient agree to summation order (tests/trainer/test_fused_loss.py: relative
1e-5); in bf16 the logits are rounded as the plain path rounds them, and the weight's gradient
is accumulated in fp32 over chunks (the plain path sums it in bf16 inside one matmul).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIN_CHUNK_ROWS = 64
"""Rows per chunk at least (a smaller matmul costs more than the memory it saves)."""


def chunk_rows(rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: one chunk's logits about as large as all rows' hidden states (Liger's
    rule), at least `MIN_CHUNK_ROWS`."""
    return max(MIN_CHUNK_ROWS, math.ceil(rows * hidden / max(1, vocab)))


def _chunked_function() -> Any:
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(
            ctx: Any,
            h: torch.Tensor,
            weight: torch.Tensor,
            bias: torch.Tensor | None,
            targets: torch.Tensor,
            softcap: float | None,
            rows_per_chunk: int,
        ) -> torch.Tensor:
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            need_b = need_b and bias is not None
            n = h.shape[0]
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if need_h else None
            grad_w = (
                torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
            )
            grad_b = (
                torch.zeros(weight.shape[0], dtype=torch.float32, device=h.device)
                if need_b
                else None
            )
            wants_grad = need_h or need_w or need_b
            for start in range(0, n, rows_per_chunk):
                stop = min(n, start + rows_per_chunk)
                hc = h[start:stop]
                tc = targets[start:stop]
                logits = hc @ weight.t()
                if bias is not None:
                    logits = logits + bias
                z = logits.float()
                del logits
                capped = None
                if softcap is not None:
                    capped = torch.tanh(z / softcap)
                    z = capped * softcap
                lse = torch.logsumexp(z, dim=-1)
                picked = z.gather(1, tc.unsqueeze(1)).squeeze(1)
                loss += (lse - picked).sum()
                if not wants_grad:
                    continue
                # d loss / d z = softmax(z) - one_hot(target), in place over z
                g = z.sub_(lse.unsqueeze(1)).exp_()
                g[torch.arange(stop - start, device=g.device), tc] -= 1.0
                if capped is not None:
                    g.mul_(1.0 - capped * capped)
                    del capped
                if need_b:
                    assert grad_b is not None
                    grad_b += g.sum(0)
                gd = g.to(h.dtype)
                del g
                if need_h:
                    assert grad_h is not None
                    grad_h[start:stop] = gd @ weight
                if need_w:
                    assert grad_w is not None
                    if gd.dtype == torch.float32:
                        grad_w.addmm_(gd.t(), hc)
                    else:
                        grad_w += (gd.t() @ hc).float()
            ctx.save_for_backward(
                *(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b))
            )
            ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
            ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
            return loss

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            saved = ctx.saved_tensors
            out: list[Any] = []
            for tensor, present, dtype in zip(saved, ctx.present, ctx.dtypes, strict=True):
                out.append((tensor * grad).to(dtype) if present else None)
            return (*out, None, None, None)

    return ChunkedLinearCrossEntropy


@functools.cache
def _function() -> Any:
    return _chunked_function()


def chunked_linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    softcap: float | None = None,
    rows_per_chunk: int | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of `h @ weight.T + bias` (soft-capped if `softcap`) against
    `targets`, one chunk of logits at a time (module docstring). `h`: [rows, hidden]."""
    rows = rows_per_chunk or chunk_rows(h.shape[0], h.shape[1], weight.shape[0])
    loss: torch.Tensor = _function().apply(h, weight, bias, targets, softcap, rows)
    return loss


def liger_available() -> bool:
    """Whether Liger-Kernel's fused loss can run here (CUDA and the package installed)."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def liger_linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    softcap: float | None = None,
) -> torch.Tensor:
    """The same sum through Liger-Kernel's fused Triton kernel (CUDA only)."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    out = liger_fused_linear_cross_entropy(
        h, weight, targets, bias=bias, reduction="sum", softcap=softcap
    )
    loss = out[0] if isinstance(out, tuple) else getattr(out, "loss", out)
    result: torch.Tensor = loss.float()
    return result
