"""Deferred weights: a model whose frozen weights are read later, one shard per rank.

`load_model(..., low_memory=True)` (FSDP and ZeRO-3 on several ranks) builds the model's
skeleton without reading any weight: parameters are zero-byte placeholders (a scalar
expanded to the parameter's shape, on the CPU, in the load dtype), buffers are real (rotary
tables are computed in `__init__`). The tuning plan is applied to the skeleton as to a loaded
model: LoRA adapters are created and initialised normally, from the same RNG state as in
the normal path. Then:

- `trainable_fp32(model)` (the loop, after tuning) turns trained base parameters into fp32
  placeholders, or, when a checkpoint or an adapter is about to be loaded into them, reads
  them in full (fp32, through the load dtype as the normal path does);
- the strategy shards the skeleton and each rank reads only its rows (FSDP2) or its flat
  partition (ZeRO-3) of every deferred parameter (`DeferredWeights.read`).

Peak host memory per rank is then its shard and one parameter in flight (plus the trained
parameters in full when resuming), instead of the whole model. Checkpoint keys are mapped to
parameter names with transformers' own conversion table (a checkpoint saved by transformers
4 loads too); a checkpoint that needs more than renaming, a missing weight, QLoRA, DoRA (its
magnitude is computed from the base weight when the adapter is created) or a non-safetensors
checkpoint falls back to the normal path, with a log line saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.models.safetensors_index import SafetensorsIndex, UnsupportedCheckpoint
from vlaunch_core.models.description import canonical_name

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel

    from vlaunch_core.spec import ModelSpec

logger = logging.getLogger(__name__)

_ATTR = "_vlaunch_deferred_weights"


class CannotDefer(Exception):
    """Low-memory loading does not apply to this model; the message says why."""


@dataclass
class DeferredWeights:
    """Where each parameter of a skeleton model comes from in the checkpoint."""

    index: SafetensorsIndex
    keys: dict[str, str]
    """Parameter / buffer name in the bare model (tied names included) -> checkpoint key."""
    folder: Path
    load_dtype: torch.dtype
    """The dtype `load_model` was asked for; fp32 masters pass through it, as in the normal
    path (checkpoint -> load dtype -> fp32)."""
    in_memory: set[int] = field(default_factory=set)
    """ids of parameters whose value was read in full already (`trainable_fp32`)."""
    read_bytes: int = field(default=0)

    def key(self, name: str) -> str | None:
        """The checkpoint key of a parameter (names inside a PeftModel work too)."""
        return self.keys.get(canonical_name(name))

    def read(self, name: str, start: int, out: torch.Tensor) -> None:
        """Elements `[start, start + out.numel())` of the flattened weight `name` into `out`."""
        import torch

        key = self.key(name)
        if key is None:
            raise KeyError(f"{name} has no weight in {self.folder}")
        if out.is_floating_point() and out.dtype != self.load_dtype:
            staged = torch.empty(out.shape, dtype=self.load_dtype)
            self.index.read(key, start, staged)
            out.copy_(staged)
        else:
            self.index.read(key, start, out)
        self.read_bytes += out.numel() * out.element_size()

    def read_full(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The whole weight `name` on the CPU in `dtype`."""
        import torch

        key = self.key(name)
        if key is None:
            raise KeyError(f"{name} has no weight in {self.folder}")
        out = torch.empty(self.index.entries[key].shape, dtype=dtype)
        self.read(name, 0, out)
        return out

    def close(self) -> None:
        self.index.close()


def deferred_weights(model: nn.Module) -> DeferredWeights | None:
    """The deferred weights of a skeleton (also through a PeftModel), or None."""
    found = getattr(model, _ATTR, None)
    return found if isinstance(found, DeferredWeights) else None


def detach_weights(model: nn.Module) -> None:
    """Forget the deferred weights once every rank has read its shard."""
    weights = deferred_weights(model)
    if weights is None:
        return
    weights.close()
    for m in model.modules():
        m.__dict__.pop(_ATTR, None)


def placeholder(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `shape` that owns one element (every element aliases it)."""
    import torch

    return torch.zeros((), dtype=dtype).expand(shape)


def is_placeholder(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.untyped_storage().nbytes() < t.numel() * t.element_size()


def load_skeleton(
    folder: Path,
    model_spec: ModelSpec,
    dtype: torch.dtype,
) -> PreTrainedModel:
    """The model of `folder` with placeholder parameters and its deferred weights attached.

    Raises `CannotDefer` when the checkpoint cannot be read shard by shard.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    try:
        index = SafetensorsIndex.of_folder(folder)
    except UnsupportedCheckpoint as e:
        raise CannotDefer(str(e)) from e
    if index is None:
        raise CannotDefer(f"{folder} has no safetensors weights")
    config = AutoConfig.from_pretrained(
        folder, revision=model_spec.revision, trust_remote_code=model_spec.trust_remote_code
    )
    # The skeleton draws nothing from the RNG, so LoRA adapters are initialised exactly as
    # after from_pretrained (which draws nothing either).
    from trainer.models.describe import auto_class

    cls = auto_class(config, model_spec.trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        with init_empty_weights(include_buffers=False):
            model = cls.from_config(
                config,
                dtype=dtype,
                attn_implementation=model_spec.attn_implementation,
                trust_remote_code=model_spec.trust_remote_code,
            )
        model.tie_weights()  # as from_pretrained does (lm_head = embed_tokens where tied)
    keys = _checkpoint_keys(model, index)
    names = dict(model.named_parameters(remove_duplicate=False))
    missing = sorted(n for n in names if n not in keys)
    if missing:
        raise CannotDefer(f"the checkpoint has no weight for {missing[:3]}")
    _to_placeholders(model)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name in keys:  # persistent buffers saved with the weights
                index.read(keys[name], 0, buf.view(-1) if buf.is_contiguous() else buf)
    model.eval()  # as from_pretrained leaves it
    setattr(model, _ATTR, DeferredWeights(index, keys, folder, load_dtype=dtype))
    return model


def _checkpoint_keys(model: PreTrainedModel, index: SafetensorsIndex) -> dict[str, str]:
    """Model name -> checkpoint key, with transformers' renaming rules (as from_pretrained)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    prefix = model.base_model_prefix
    keys: dict[str, str] = {}
    for key in index.entries:
        name, converter = rename_source_key(key, renamings, converters, prefix, expected)
        if name not in expected and key in expected:
            name, converter = rename_source_key(key, [], [], prefix, expected)
        if converter is not None:
            raise CannotDefer(f"checkpoint key {key} needs a conversion, not only a new name")
        if name in expected:
            if expected[name].shape != index.entries[key].shape:
                raise CannotDefer(
                    f"{key} has shape {index.entries[key].shape}, the model expects "
                    f"{tuple(expected[name].shape)}"
                )
            keys[name] = key
    # Tied parameters (lm_head = embed_tokens) are saved once: every alias gets the key.
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    for aliases in by_id.values():
        found = next((keys[a] for a in aliases if a in keys), None)
        if found is not None:
            keys.update(dict.fromkeys(aliases, found))
    return keys


def _to_placeholders(model: nn.Module) -> None:
    """Replace every meta parameter by a placeholder (tied parameters stay tied)."""
    import torch

    done: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in done:
                done[id(p)] = torch.nn.Parameter(
                    placeholder(p.shape, p.dtype), requires_grad=p.requires_grad
                )
            module._parameters[name] = done[id(p)]


def trainable_fp32(model: nn.Module, *, materialize: bool = False) -> None:
    """Trained parameters as fp32 master weights (frozen ones keep the load dtype).

    On a skeleton, trained base parameters (a projector, a fully tuned part, and peft's
    trainable copies of them) stay deferred as fp32 placeholders and are read shard by shard
    later; with `materialize` (resuming, or starting from an adapter: their values are about
    to be overwritten in place) they are read in full now. Either way the values pass through
    the load dtype first, as in the normal path. Deep copies of frozen weights that peft made
    become placeholders again.
    """
    import torch

    weights = deferred_weights(model)
    for name, p in model.named_parameters():
        key = weights.key(name) if weights is not None else None
        if weights is not None and key is not None:
            if p.requires_grad and materialize:
                p.data = weights.read_full(name, p.dtype)
                weights.in_memory.add(id(p))
            elif id(p) not in weights.in_memory:
                dtype = torch.float32 if p.requires_grad and p.is_floating_point() else p.dtype
                p.data = placeholder(p.shape, dtype)
                continue
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def from_checkpoint(model: nn.Module, weights: DeferredWeights) -> dict[str, bool]:
    """For each parameter name: True if this rank reads its value (shard) from the
    checkpoint, False if the value is in memory already (adapters, materialised weights)."""
    out: dict[str, bool] = {}
    for name, p in model.named_parameters():
        from_file = weights.key(name) is not None and id(p) not in weights.in_memory
        if not from_file and is_placeholder(p):
            raise RuntimeError(f"{name}: no value in memory and none in the checkpoint")
        out[name] = from_file
    return out
