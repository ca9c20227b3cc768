"""The final export of a run: a clean `adapter/` (LoRA runs) or a full `model/`.

`output.export`:
- `adapter`: `<run>/adapter/` holds the PEFT adapter exactly as `PeftModel.save_pretrained`
  lays it out (modules trained next to LoRA, such as the projector, are inside it as PEFT
  `modules_to_save`), plus `non_lora_trainables.safetensors` when other weights were trained
  (LayerNorm tuning), and a README saying how to load it. Full fine-tuning exports `model/`.
- `merged`: `<run>/model/`, a plain transformers model folder (LoRA merged in) with its
  processor, loadable with `from_pretrained` and no PEFT.
- `none`: nothing beyond the checkpoints.

The merged model is built on rank 0 from a fresh copy of the base model plus the trained
weights, so no strategy ever has to gather the frozen weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint import ADAPTER_DIR, NON_LORA_FILE, is_peft, save_weights

if TYPE_CHECKING:
    from launcher.spec import JobSpec
    from trainer.rundir import RunDir
    from trainer.strategies.base import Strategy

logger = logging.getLogger(__name__)


def export_final(spec: JobSpec, strategy: Strategy, run_dir: RunDir) -> Path | None:
    """Write the export named by `output.export`. Collective (gathers trainable weights)."""
    if spec.output.export == "none":
        return None
    trainable = strategy.trainable_state_dict()
    if not strategy.env.is_main:
        return None
    model = strategy.base_model
    staging = run_dir.path / ".export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save_weights(model, trainable, staging)
    peft = is_peft(model)
    if spec.output.export == "adapter" and peft:
        out = run_dir.adapter_dir
        has_non_lora = (staging / NON_LORA_FILE).is_file()
        if has_non_lora:
            (staging / NON_LORA_FILE).rename(staging / ADAPTER_DIR / NON_LORA_FILE)
        (staging / ADAPTER_DIR / "README.md").write_text(
            adapter_readme(spec, out, has_non_lora=has_non_lora)
        )
        _replace(staging / ADAPTER_DIR, out)
    else:
        out = run_dir.model_dir
        merged = staging / "model"
        merge_into_base(spec, staging, merged)
        (merged / "README.md").write_text(model_readme(spec, out))
        _replace(merged, out)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s", out)
    return out


def merge_into_base(spec: JobSpec, weights: Path, out: Path) -> None:
    """A fresh base model + the trained weights of `weights/` (LoRA merged), saved to `out`."""
    from safetensors.torch import load_file

    from trainer.models.loading import load_model

    loaded = load_model(spec.model, dtype="float32")
    model: Any = loaded.model
    adapter = weights / ADAPTER_DIR
    if adapter.is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    if (weights / NON_LORA_FILE).is_file():
        result = model.load_state_dict(load_file(str(weights / NON_LORA_FILE)), strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"trained weights not in the model: {result.unexpected_keys[:5]}")
    if adapter.is_dir():
        model = model.merge_and_unload()
    model.save_pretrained(str(out))
    if loaded.processor is not None:
        loaded.processor.save_pretrained(str(out))


def _replace(src: Path, dst: Path) -> None:
    """Move a finished export into place (an older export of the run is replaced)."""
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _base_reference(spec: JobSpec) -> str:
    name = spec.model.name_or_path
    if name.startswith("tiny:"):
        from trainer.models.loading import tiny_model_path

        return str(tiny_model_path(name.removeprefix("tiny:")))
    return name


def adapter_readme(spec: JobSpec, out: Path, *, has_non_lora: bool) -> str:
    base = _base_reference(spec)
    extra = (
        "\n# This run also trained weights outside LoRA and modules_to_save:\n"
        "from safetensors.torch import load_file\n"
        f'model.load_state_dict(load_file("{out}/{NON_LORA_FILE}"), strict=False)\n'
    )
    return f"""# LoRA adapter of run `{spec.name}`

Base model: `{spec.model.name_or_path}` (`{base}`), tuning preset `{spec.tuning.preset}`.
Written by vlaunch in the standard PEFT layout (`adapter_config.json`,
`adapter_model.safetensors`); modules trained in full next to LoRA (the projector) are saved
inside it as PEFT `modules_to_save`.

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

base = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{out}")
processor = AutoProcessor.from_pretrained("{base}")
{extra if has_non_lora else ""}```

To get a plain model without PEFT: `model = model.merge_and_unload()`, then
`model.save_pretrained(...)` (or train with `output.export: merged`).
"""


def model_readme(spec: JobSpec, out: Path) -> str:
    return f"""# Fine-tuned model of run `{spec.name}`

Base model: `{spec.model.name_or_path}`, tuning preset `{spec.tuning.preset}`; LoRA (if any)
is merged in. Load it like any transformers checkpoint:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{out}")
processor = AutoProcessor.from_pretrained("{out}")
```
"""
