"""Continue training from an adapter (`model.adapter`): VILA#252's missing piece.

A new run (new name, usually new data) whose LoRA weights, and the weights trained in full
next to them (the projector as `modules_to_save`, `non_lora_trainables.safetensors`), start
from a finished run or an exported adapter instead of from PEFT's initialisation. At step 0
the model is then exactly the base model plus that adapter.

Every saved weight must land on a weight this run trains, with the same shape and the same
LoRA scaling: otherwise the run would silently start from another model, or its checkpoints
and export would lose what it loaded. Weights this run trains but the adapter lacks (say,
LoRA added on the vision tower) start as usual (LoRA B = 0: no change at step 0).
A resumed run (same name) ignores `model.adapter`: its checkpoint wins.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint import is_peft
from trainer.trained import ADAPTER_WEIGHTS, read_adapter_config, resolve
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

_SCALING_KEYS = ("lora_alpha", "use_rslora", "use_dora")


def init_from_adapter(model: nn.Module, source: str) -> None:
    """Load the adapter (and saved non-LoRA weights) of `source` into the tuned `model`."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    trained = resolve(source)
    if trained.adapter is None:
        raise UserError(
            f"model.adapter={source}: holds no LoRA adapter",
            hint="give a LoRA run directory, one of its checkpoints, or an adapter folder; "
            "to continue a full fine-tuning set model.name_or_path to its model/ folder",
        )
    if not is_peft(model):
        raise UserError("model.adapter is set but this run's tuning has no LoRA")
    peft_model: Any = model
    _check_config(read_adapter_config(trained.adapter), peft_model.peft_config["default"], source)
    saved = load_file(str(trained.adapter / ADAPTER_WEIGHTS))
    own = get_peft_model_state_dict(peft_model)
    _check_keys(set(saved), set(own), source, "LoRA / modules_to_save")
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in saved.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise UserError(
            f"model.adapter={source}: {len(bad)} weight(s) differ in shape from this run's: "
            + "; ".join(bad[:3]),
            hint="use the adapter's LoRA rank (tuning.lora.r) and the same base model",
        )
    result = set_peft_model_state_dict(peft_model, saved)
    assert not getattr(result, "unexpected_keys", None), result
    loaded = len(saved)
    if trained.non_lora is not None:
        loaded += _load_non_lora(peft_model, trained.non_lora, source)
    fresh = len(set(own) - set(saved))
    logger.info(
        "continuing from %s: %d trained tensors loaded%s",
        trained.adapter if trained.kind == "adapter" else trained.path,
        loaded,
        f", {fresh} new ones start from scratch" if fresh else "",
    )


def _check_config(saved: dict[str, Any], config: Any, source: str) -> None:
    differ = [
        f"{k}: adapter {saved.get(k)!r}, this run {getattr(config, k, None)!r}"
        for k in _SCALING_KEYS
        if k in saved and _norm(saved.get(k)) != _norm(getattr(config, k, None))
    ]
    if differ:
        raise UserError(
            f"model.adapter={source}: the LoRA settings differ from this run's: "
            + "; ".join(differ),
            hint="set tuning.lora (alpha, use_dora) as the adapter was trained, so the model "
            "starts exactly where it ended",
        )


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _check_keys(saved: set[str], own: set[str], source: str, what: str) -> None:
    extra = sorted(saved - own)
    if extra:
        raise UserError(
            f"model.adapter={source}: {len(extra)} {what} weight(s) of the adapter are not "
            f"trained by this run, e.g. {', '.join(extra[:3])}",
            hint="train at least what the adapter trained (same tuning preset / modes and "
            "LoRA targets as the run that wrote it)",
        )


def _load_non_lora(model: Any, path: Path, source: str) -> int:
    from safetensors.torch import load_file

    weights = load_file(str(path))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    _check_keys(set(weights), set(trainable), source, "non-LoRA")
    bad = [k for k, v in weights.items() if tuple(v.shape) != tuple(trainable[k].shape)]
    if bad:
        raise UserError(
            f"{path}: shapes differ from this run's weights: {bad[:3]}",
            hint="use the same base model as the run that wrote the adapter",
        )
    model.load_state_dict(weights, strict=False)
    return len(weights)
