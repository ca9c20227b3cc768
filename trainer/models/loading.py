"""Load a VLM and its processor for training: one path for tiny, random and real models.

`tiny:<type>` is built once into a cache folder and then loaded with `from_pretrained`, like
a downloaded checkpoint; `random:<name>` instantiates a real-size architecture with random
weights (benchmarks; no processor). With `low_memory=True` (FSDP and ZeRO-3 on several ranks)
a checkpoint folder gives a skeleton whose weights each rank reads later, shard by shard
(`trainer/models/deferred.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from trainer.models.describe import describe_spec
from trainer.models.processors import load_processor
from trainer.models.quantization import bitsandbytes_only_for_qlora, qlora_config, qlora_device
from trainer.models.tiny.folder import tiny_model_path
from vlaunch_core.errors import UserError
from vlaunch_core.models.configs import RANDOM_PREFIX, TINY_PREFIX

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

    from vlaunch_core.models.description import ModelDescription
    from vlaunch_core.spec import ModelSpec, TuningSpec

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: PreTrainedModel
    processor: ProcessorMixin | None
    """None for `random:<name>` models (there is no tokenizer for them)."""
    family: ModelDescription
    """What the model is made of, read off the model itself (`trainer.models.describe`)."""
    path: Path | None
    """The folder the model was loaded from (None for `random:<name>`)."""


def load_model(
    model_spec: ModelSpec,
    *,
    dtype: torch.dtype | str = "float32",
    device: torch.device | str | None = None,
    tuning: TuningSpec | None = None,
    with_processor: bool = True,
    low_memory: bool = False,
) -> LoadedModel:
    """The model, its processor and its family, as the job spec's `model:` section says.

    `dtype` is the weights' dtype ("float32", "bfloat16", ...). Pass the job's `tuning` when
    it may use QLoRA: the language model is then read in 4-bit NF4 (bitsandbytes; on CUDA, or
    on CPU with a bitsandbytes that supports it). `low_memory=True` returns a skeleton with
    deferred weights when the checkpoint allows it (see `trainer.models.deferred`); the
    strategy that shards it reads the weights.
    """
    import torch

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    qlora = tuning is not None and tuning.modes()["language_model"] == "qlora"
    bitsandbytes_only_for_qlora(qlora)
    qlora_dev = qlora_device() if qlora else None  # a user error if QLoRA cannot run here
    name = model_spec.name_or_path
    if name.startswith(RANDOM_PREFIX):
        if qlora:
            raise UserError(
                "QLoRA needs pretrained weights to quantize; random:<name> has none",
                hint="use tuning.language_model=lora for random:<name> benchmarks",
            )
        model = _from_config(model_spec, torch_dtype, device)
        return LoadedModel(model=model, processor=None, family=_describe(model), path=None)

    path: Path | str
    if name.startswith(TINY_PREFIX):
        path = tiny_model_path(name.removeprefix(TINY_PREFIX))
    else:
        path = Path(name).expanduser() if Path(name).expanduser().is_dir() else name
    quantization = qlora_config(describe_spec(model_spec), torch_dtype) if qlora else None
    skeleton = _skeleton(path, model_spec, torch_dtype, tuning) if low_memory else None
    loaded = (
        skeleton
        if skeleton is not None
        else _instantiate(path, model_spec, torch_dtype, device or qlora_dev, quantization)
    )
    processor = (
        load_processor(
            path, revision=model_spec.revision, trust_remote_code=model_spec.trust_remote_code
        )
        if with_processor
        else None
    )
    local = Path(path) if isinstance(path, Path) else None
    family = _describe(loaded, remote_code=model_spec.trust_remote_code)
    return LoadedModel(model=loaded, processor=processor, family=family, path=local)


def _skeleton(
    path: Path | str, model_spec: ModelSpec, dtype: torch.dtype, tuning: TuningSpec | None
) -> PreTrainedModel | None:
    """A skeleton with deferred weights, or None (logged) when low-memory loading does not
    apply to this model."""
    from trainer.models.deferred import CannotDefer, load_skeleton

    modes = tuning.modes() if tuning is not None else {}
    folder = Path(path) if isinstance(path, Path) else _cached_snapshot(path, model_spec)
    reason = None
    if "qlora" in modes.values():
        reason = "QLoRA quantizes the weights while loading them"
    elif tuning is not None and tuning.lora.use_dora and "lora" in modes.values():
        reason = "DoRA initialises its magnitudes from the full base weights"
    elif folder is None:
        reason = f"'{path}' is not in the local Hugging Face cache"
    else:
        try:
            return load_skeleton(folder, model_spec, dtype)
        except CannotDefer as e:
            reason = str(e)
    logger.info("low-memory loading does not apply (%s): every rank loads the full model", reason)
    return None


def _cached_snapshot(repo_id: str, model_spec: ModelSpec) -> Path | None:
    """The local snapshot folder of a hub id (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=model_spec.revision)
    except Exception:  # an invalid repo id is a miss
        return None
    return Path(found).parent if isinstance(found, str) else None


def _describe(model: Any, *, remote_code: bool = False) -> ModelDescription:
    from trainer.models.describe import describe_model

    return describe_model(model, remote_code=remote_code)


def _instantiate(
    path: Path | str,
    model_spec: ModelSpec,
    dtype: torch.dtype,
    device: torch.device | str | None,
    quantization: Any = None,
) -> PreTrainedModel:
    from trainer.models.describe import auto_class, model_config

    extra: dict[str, Any] = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": device or "cuda"}}
    cls = auto_class(model_config(model_spec), model_spec.trust_remote_code)
    try:
        model = cls.from_pretrained(
            path,
            revision=model_spec.revision,
            trust_remote_code=model_spec.trust_remote_code,
            attn_implementation=model_spec.attn_implementation,
            dtype=dtype,
            **extra,
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load model '{model_spec.name_or_path}': {e}",
            hint="check model.name_or_path (a folder with config.json and weights, or a hub "
            "id reachable from here) and model.attn_implementation",
        ) from e
    if quantization is None and device is not None:
        model = cast(Any, model).to(device)
    return model


def _from_config(
    model_spec: ModelSpec, dtype: torch.dtype, device: torch.device | str | None
) -> PreTrainedModel:
    """A real-size architecture with random weights (`random:<name>`)."""
    import torch

    from trainer.models.describe import build_from_config, model_config

    config = model_config(model_spec)
    with torch.device(device or "cpu"):
        model = build_from_config(
            config, model_spec, dtype=dtype, attn_implementation=model_spec.attn_implementation
        )
    return cast("PreTrainedModel", model)
