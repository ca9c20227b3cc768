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


BITSANDBYTES = "bitsandbytes"


def bitsandbytes_only_for_qlora(qlora: bool) -> None:
    """Let this process import bitsandbytes only when it runs QLoRA.

    peft imports bitsandbytes as soon as peft itself is imported (`peft/helpers.py`) and again
    for every LoRA layer it creates (`is_bnb_available()`), whether or not anything is
    quantized; bitsandbytes 0.50 then asks the Hugging Face Hub for a CPU kernel on every
    machine with AVX512-BF16 and logs two warnings (`kernels-community/quantization-
    bitsandbytes ... not available in the local cache`) per process. Without QLoRA nothing of
    bitsandbytes is used, so it is marked absent: `sys.modules[name] = None` makes `import`
    raise ImportError and `find_spec` return None, which peft and transformers read as "not
    installed". QLoRA undoes it (and peft's cached answers) before it loads anything.
    """
    if not qlora:
        sys.modules.setdefault(BITSANDBYTES, None)  # type: ignore[arg-type]
        return
    if BITSANDBYTES in sys.modules and sys.modules[BITSANDBYTES] is None:
        del sys.modules[BITSANDBYTES]
        peft_imports = sys.modules.get("peft.import_utils")
        for name in ("is_bnb_available", "is_bnb_4bit_available"):
            cache_clear = getattr(getattr(peft_imports, name, None), "cache_clear", None)
            if cache_clear is not None:
                cache_clear()


def bnb_devices() -> set[str] | None:
    """Device types bitsandbytes supports here, or None when it is not installed."""
    bitsandbytes_only_for_qlora(True)  # asking means QLoRA is wanted
    if importlib.util.find_spec(BITSANDBYTES) is None:
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
