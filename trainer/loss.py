"""The loss: summed token cross-entropy, normalised by the target tokens of the whole step.

Averaging per micro batch (what `loss.mean()` then `/ accumulation` gives) weights a short
answer's tokens more than a long one's and changes with the micro batch size. Here every
target token of the optimizer step (all micro batches, all ranks) counts the same: each micro
batch contributes `sum(CE) * world_size / tokens_in_step`, and the ranks' gradient averaging
divides the world size back out.

`PlainLoss` takes the model's full logits; `trainer.loss_head` computes the same sum inside
the output layer without them (`build_loss` picks one from `train.loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


def target_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry a loss: labels predicted from the previous position."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over the target tokens, in fp32."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def model_inputs(
    batch: dict[str, Any], device: torch.device, float_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """The batch on `device` without labels (the loop computes the loss itself)."""
    import torch

    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "labels" or not isinstance(value, torch.Tensor):
            continue
        cast = float_dtype if float_dtype is not None and value.is_floating_point() else None
        out[key] = value.to(device, dtype=cast, non_blocking=True)
    return out


Forward = Callable[[dict[str, Any]], Any]
"""Runs the (wrapped) model on a batch: `strategy.forward`."""


class TokenLoss(Protocol):
    """Summed token cross-entropy of one micro batch: `loss(forward, inputs, labels)`."""

    @property
    def kind(self) -> str: ...

    def __call__(self, forward: Forward, inputs: dict[str, Any], labels: Any) -> torch.Tensor: ...


class PlainLoss:
    """From the model's full `.logits` ([tokens x vocab], upcast to fp32)."""

    kind = "plain"

    def __call__(self, forward: Forward, inputs: dict[str, Any], labels: Any) -> torch.Tensor:
        logits = forward({**inputs, "use_cache": False}).logits
        return summed_cross_entropy(logits, labels)
