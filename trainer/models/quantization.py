"""QLoRA: the language model in 4-bit NF4 (bitsandbytes), everything else in full precision.

Quantization happens while loading (`load_model(..., tuning=...)`); `apply_tuning` then puts
LoRA adapters on the quantized Linear layers. bitsandbytes runs 4-bit on CUDA and, since
0.48 or so, on CPU too (slowly: fine for tests, not for training).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError
from vlaunch_core.models.description import ModelDescription

if TYPE_CHECKING:
    import torch


def skip_bitsandbytes(language_model_mode: str) -> bool:
    """In a process that trains without QLoRA, make bitsandbytes look absent before peft and
    transformers are imported: both import it whenever it is installed, which costs about
    1.3 s of CPU per process (it pulls in torch._dynamo and looks for hub kernels). Call it
    first thing in a process that runs one job (`python -m trainer.run`, a Ray worker);
    returns whether it did. `importlib.util.find_spec` answers None for a module that
    `sys.modules` maps to None, so every availability check sees it as not installed."""
    if language_model_mode == "qlora" or "bitsandbytes" in sys.modules:
        return False
    for name in ("transformers", "peft"):
        if name in sys.modules:  # too late: they have looked already
            return False
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    return True


def bnb_devices() -> set[str] | None:
    """Device types bitsandbytes supports here, or None when it is not installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    import bitsandbytes

    return set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))


def qlora_device() -> str:
    """Where QLoRA would run here ("cuda" or "cpu"); a user error if it cannot."""
    import torch

    devices = bnb_devices()
    if devices is None:
        raise UserError(
            "QLoRA (tuning.language_model=qlora) needs the bitsandbytes package, which is not "
            "installed",
            hint="pip install 'vlaunch[qlora]' (bitsandbytes) in the training environment, or "
            "use tuning.language_model=lora",
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in devices:
        raise UserError(
            "QLoRA (tuning.language_model=qlora) needs a CUDA GPU: this bitsandbytes has no "
            f"4-bit kernels for {device} (it supports {', '.join(sorted(devices))})",
            hint="use tuning.language_model=lora (or preset lora_llm / ln_vt_lora_llm) here and "
            "QLoRA on a GPU node, or upgrade bitsandbytes (>=0.48 runs 4-bit on CPU)",
        )
    return device


def require_qlora() -> None:
    """A user error unless QLoRA can run here."""
    qlora_device()


def qlora_config(family: ModelDescription, compute_dtype: torch.dtype) -> Any:
    """`BitsAndBytesConfig` that quantizes only the language model's Linear layers."""
    from transformers import BitsAndBytesConfig

    keep = [*family.vision_tower, *family.projector, "lm_head"]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
        # Matched from the start of module names (transformers 5): full prefixes.
        llm_int8_skip_modules=[re.escape(p) for p in keep],
    )


def is_quantized(module: torch.nn.Module) -> bool:
    return any(type(m).__name__ == "Linear4bit" for m in module.modules())
