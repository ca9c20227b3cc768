"""Exports of a run: the final one the trainer writes, and `vlaunch export --merge`.

`output.export` (at the end of training):
- `adapter`: `<run>/adapter/` holds the PEFT adapter exactly as `PeftModel.save_pretrained`
  lays it out (modules trained next to LoRA, such as the projector, are inside it as PEFT
  `modules_to_save`), plus `non_lora_trainables.safetensors` when other weights were trained
  (LLaVA-NeXT's image_newline, a fully tuned language model), the base model's processor and
  a README saying how to load it. Full fine-tuning exports `model/`.
- `merged`: `<run>/model/`, a plain transformers model folder (LoRA merged in) with its
  processor, loadable with `from_pretrained` and no PEFT.
- `none`: nothing beyond the checkpoints.

A merged model is built on rank 0 from a fresh copy of the base model plus the trained
weights, so no strategy ever has to gather the frozen weights. The folder is what
`AutoModelForImageTextToText.from_pretrained` / `AutoProcessor.from_pretrained` read: weights
in safetensors, `config.json`, `generation_config.json`, the processor, tokenizer and chat
template, and the run's spec as `vlaunch_spec.yaml` (read by `vlaunch infer`, ignored by
transformers). Adapter-only exports are in `trainer.adapter_export`; every export carries
the processor, so `AutoProcessor.from_pretrained(export)` works on each.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint import ADAPTER_DIR, NON_LORA_FILE, is_peft, save_weights, spec_yaml
from trainer.outputs import check_export_target, mark_export, replace_export, staging_dir
from trainer.trained import SPEC_FILE, Trained
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from trainer.rundir import RunDir
    from trainer.strategies.base import Strategy
    from vlaunch_core.spec import JobSpec, ModelSpec

logger = logging.getLogger(__name__)

#: Files of a base model folder that belong to its processor, tokenizer or generation setup.
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
)


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
        (staging / ADAPTER_DIR / SPEC_FILE).write_text(spec_yaml(spec))
        write_processor(spec.model, staging / ADAPTER_DIR)
        replace_dir(staging / ADAPTER_DIR, out)
    else:
        out = run_dir.model_dir
        merged = staging / "model"
        merge_into_base(spec, staging, merged, final=out)
        replace_dir(merged, out)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s", out)
    return out


def merge_into_base(spec: JobSpec, weights: Path, out: Path, *, final: Path | None = None) -> None:
    """A fresh base model + the trained weights of `weights/` (LoRA merged), saved to `out`
    (`final`: where the folder ends up, for its README)."""
    adapter = weights / ADAPTER_DIR
    non_lora = weights / NON_LORA_FILE
    trained = Trained(
        "checkpoint",
        weights,
        spec,
        adapter=adapter if adapter.is_dir() else None,
        non_lora=non_lora if non_lora.is_file() else None,
    )
    write_merged(trained, out, final=final)


def export_merged(trained: Trained, out: Path, *, dtype: str = "auto", force: bool = False) -> Path:
    """`vlaunch export --merge OUT`: a standalone transformers model folder at `out`
    (trainer/outputs.py decides whether `out` may be written or replaced)."""
    out = check_export_target(out, force=force, sources=trained.sources())
    staging = staging_dir(out)
    try:
        write_merged(trained, staging, dtype=dtype, final=out)
        mark_export(staging, "merged", trained.path)
        replace_export(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_merged(
    trained: Trained, out: Path, *, dtype: str = "auto", final: Path | None = None
) -> None:
    """Base + trained weights, LoRA merged, saved with processor and generation config."""
    import torch

    from trainer.progress import stage
    from trainer.trained import load_trained

    loaded = load_trained(trained, dtype="float32", merge=True)  # merge in fp32
    model: Any = loaded.model
    if is_peft(model):
        raise AssertionError("merge_and_unload left a PeftModel")
    leftovers = [n for n, _ in model.named_parameters() if "lora_" in n or "modules_to_save" in n]
    assert not leftovers, leftovers[:5]
    target = _export_dtype(trained.base_model_spec(), dtype)
    model.to(getattr(torch, target))
    out.mkdir(parents=True, exist_ok=True)
    with stage(f"writing the merged model ({target}) to {final or out}"):
        model.save_pretrained(str(out))
        write_processor(trained.base_model_spec(), out, loaded.processor)
    if trained.spec is not None:
        (out / SPEC_FILE).write_text(spec_yaml(trained.spec))
        (out / "README.md").write_text(model_readme(trained.spec, final or out))


def _export_dtype(base: ModelSpec, dtype: str) -> str:
    """`auto`: the dtype the base checkpoint is stored in (float32 when it does not say)."""
    if dtype != "auto":
        return dtype
    from trainer.models.describe import model_config

    try:
        config = model_config(base).to_dict()
    except UserError:
        return "float32"
    text = config.get("text_config") or {}
    found = config.get("dtype") or config.get("torch_dtype") or text.get("dtype")
    return found if found in ("float32", "bfloat16", "float16") else "float32"


def base_folder(base: ModelSpec) -> Path | None:
    """The local folder of the base model (a folder, tiny:<type>, or the HF cache)."""
    name = base_path(base)
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=base.revision)
    except Exception:  # not a valid repo id: no folder
        return None
    return Path(found).parent if isinstance(found, str) else None


def write_processor(base: ModelSpec, out: Path, processor: Any = None) -> None:
    """The base model's processor (tokenizer, chat template, image and, where the family has
    one, video processor) saved into `out`, so that `AutoProcessor.from_pretrained(out)`
    works on every export. `processor`: the one already loaded from the base (else loaded)."""
    if processor is None:
        processor = load_base_processor(base)
    processor.save_pretrained(str(out))
    _copy_processor_files(base, out)


def load_base_processor(base: ModelSpec) -> Any:
    """The processor of the base model (the one training encoded the data with)."""
    from trainer.models.processors import load_processor

    try:
        return load_processor(
            base_path(base), revision=base.revision, trust_remote_code=base.trust_remote_code
        )
    except OSError as e:  # not a folder, not in the cache, and the hub is out of reach
        raise UserError(
            f"cannot load the processor of the base model '{base.name_or_path}' to write it "
            f"into the export: {e}",
            hint="make the base model reachable here: its folder, the Hugging Face cache, or "
            "the hub (without HF_HUB_OFFLINE)",
        ) from None


def _copy_processor_files(base: ModelSpec, out: Path) -> None:
    """Processor and tokenizer files of the base folder that `save_pretrained` did not write
    (e.g. a sentencepiece `tokenizer.model` next to `tokenizer.json`), so that the export
    holds every file the base's processor came with."""
    folder = base_folder(base)
    if folder is None:
        return
    for name in PROCESSOR_FILES:
        src = folder / name
        if src.is_file() and not (out / name).exists():
            shutil.copyfile(src, out / name)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the run's own final export (`<run>/adapter`, `<run>/model`) into place; the older
    one is renamed to a fresh name first, then removed."""
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        old.rmdir()
        dst.rename(old)
        src.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dst)


def base_path(base: ModelSpec) -> str:
    """The hub id or folder of a base model (`tiny:<type>` resolved to its folder)."""
    name = base.name_or_path
    if name.startswith("tiny:"):
        from trainer.models.tiny.folder import tiny_model_path

        return str(tiny_model_path(name.removeprefix("tiny:")))
    return name


def base_reference(spec: JobSpec) -> str:
    """What an adapter's `base_model_name_or_path` should say: the hub id or folder."""
    return base_path(spec.model)


def adapter_readme(spec: JobSpec, out: Path, *, has_non_lora: bool) -> str:
    base = base_reference(spec)
    read = (
        "# The run also trained weights that PEFT cannot hold (see below):\n"
        "from safetensors.torch import load_file\n\n"
        f'extra = load_file("{out}/{NON_LORA_FILE}")\n'
    )
    # saved from the PeftModel: its names; transformers' model has the bare model's names
    with_transformers = (
        read + 'model.load_state_dict({k.removeprefix("base_model.model."): v '
        "for k, v in extra.items()}, strict=False)\n"
    )
    with_peft = read + "model.load_state_dict(extra, strict=False)\n"
    non_lora_note = (
        f"\n`{NON_LORA_FILE}` holds weights trained outside LoRA and `modules_to_save` (e.g. "
        "LLaVA-NeXT's `image_newline`, a bare parameter): without them the model is not the "
        "trained one.\n"
    )
    if not has_non_lora:
        with_transformers = with_peft = non_lora_note = ""
    return f"""# LoRA adapter of run `{spec.name}`

Base model: `{spec.model.name_or_path}` (`{base}`), tuning preset `{spec.tuning.preset}`.
Written by vlaunch in the standard PEFT layout (`adapter_config.json`,
`adapter_model.safetensors`); modules trained in full next to LoRA (the projector) are saved
inside it as PEFT `modules_to_save`. The base model's processor (tokenizer, chat template,
image processor and, where the family has one, video processor) is saved here too.

With transformers and PEFT installed, transformers loads the base model that
`adapter_config.json` names and applies the adapter:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{out}")
processor = AutoProcessor.from_pretrained("{out}")
{with_transformers}```

Or with PEFT's own class:

```python
from peft import PeftModel

base = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{out}")
{with_peft}```
{non_lora_note}
Or with vlaunch: `vlaunch infer {out} --image IMG --prompt "..."`; a plain model without
PEFT: `vlaunch export RUN_DIR --merge OUT`. `{SPEC_FILE}` is the run's job spec (the chat
and media options `vlaunch infer` prompts with).
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

`{SPEC_FILE}` is the run's job spec (the chat and media options `vlaunch infer` uses).
"""
