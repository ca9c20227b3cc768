"""Describe a model from the model itself: built on the meta device (no weights, any size).

    python -m trainer.models.describe NAME_OR_PATH [--revision R] [--trust-remote-code]

prints the `ModelDescription` as JSON: what `vlaunch_core.models.catalog` runs (in a
subprocess, so the launcher stays torch-free) and caches. The trainer calls `describe_model`
directly on the model it loaded.

- parameters: `named_parameters()` (tied weights once), with their kind from the owning
  module's class and their part from the names along their path;
- layer stacks: every ModuleList of at least two layers of one class (outermost only) that
  holds parameters: the decoder layers, the vision encoder layers; their classes are the FSDP
  units, the Linear modules inside them the default LoRA targets of their part;
- sizes for the activation model from the model's own config (defaults filled in by
  transformers, so a config.json that omits Llama's defaults still gives the right sizes).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError
from vlaunch_core.models.description import (
    Dims,
    Kind,
    LayerStack,
    ModelDescription,
    ParamInfo,
    first_int,
    part_of,
    unused_vision_layers,
)
from vlaunch_core.models.quirks import quirks_for

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from vlaunch_core.spec import ModelSpec


def describe_model(model: torch.nn.Module, *, remote_code: bool = False) -> ModelDescription:
    """The description of a built model (meta, CPU or GPU; a PeftModel is unwrapped)."""
    base = _unwrap(model)
    config = base.config
    model_type = str(getattr(config, "model_type", "") or "")
    quirks = quirks_for(model_type)
    overrides = dict(quirks.part_overrides)
    kinds = _kinds(base)
    params = tuple(
        ParamInfo(
            name,
            tuple(int(d) for d in p.shape),
            kinds.get(name.rsplit(".", 1)[0], "other"),
            part_of(name, overrides),
        )
        for name, p in base.named_parameters()
    )
    stacks = tuple(_stacks(base, overrides))
    cfg = config.to_dict()
    unused: list[str] = []
    vision = [s for s in stacks if s.part == "vision_tower"]
    if len(vision) == 1:
        tower = _tower_of(vision[0].prefix, overrides)
        unused += unused_vision_layers(cfg, vision[0], tower)
    if quirks.unused is not None:
        unused += quirks.unused(cfg)
    text_cfg = config.get_text_config().to_dict()
    vision_cfg = _vision_config(cfg)
    lm_stacks = [s for s in stacks if s.part == "language_model"]
    video = quirks.video if quirks.video is not None else _has_video(model_type, cfg)
    return ModelDescription(
        model_type=model_type,
        architecture=type(base).__name__,
        params=params,
        stacks=stacks,
        text=_text_dims(text_cfg, sum(s.count for s in lm_stacks)),
        vision=_vision_dims(vision_cfg, sum(s.count for s in vision)),
        tied_embeddings=bool(text_cfg.get("tie_word_embeddings", cfg.get("tie_word_embeddings"))),
        video=video,
        multi_image=quirks.max_images is None,
        remote_code=remote_code,
        unused_prefixes=tuple(dict.fromkeys(u for u in unused if _exists(u, params))),
        part_overrides=overrides,
        notes=quirks.notes,
        lora_all_linears=quirks.lora_all_linears,
    )


def describe_spec(model_spec: ModelSpec) -> ModelDescription:
    """Build the spec's model on the meta device and describe it."""
    import torch

    config = model_config(model_spec)
    with torch.device("meta"):
        model = build_from_config(config, model_spec)
    return describe_model(model, remote_code=model_spec.trust_remote_code)


def describe_model_type(model_type: str) -> ModelDescription:
    """The description of an architecture at its default (real-size) config."""
    import torch
    from transformers import AutoConfig

    from vlaunch_core.spec import ModelSpec

    try:
        config = AutoConfig.for_model(model_type)
    except ValueError as e:
        raise UserError(f"unknown model type '{model_type}': {_first_line(e)}") from None
    with torch.device("meta"):
        model = build_from_config(config, ModelSpec(name_or_path=model_type))
    return describe_model(model)


def model_config(model_spec: ModelSpec) -> PretrainedConfig:
    """The config of the spec's model, as transformers reads it (defaults filled in):
    `tiny:<type>` and `random:<name>` configs, a local folder, or a hub id (from the cache;
    the network only where it is reachable)."""
    from transformers import AutoConfig

    from vlaunch_core.models.configs import RANDOM_PREFIX, TINY_PREFIX, model_config_dict

    name = model_spec.name_or_path
    if name.startswith(TINY_PREFIX):  # the built folder: its config as saved
        from trainer.models.tiny.folder import tiny_model_path

        return AutoConfig.from_pretrained(tiny_model_path(name.removeprefix(TINY_PREFIX)))
    if name.startswith(RANDOM_PREFIX):
        return AutoConfig.for_model(**model_config_dict(name))
    try:
        return AutoConfig.from_pretrained(
            name, revision=model_spec.revision, trust_remote_code=model_spec.trust_remote_code
        )
    except (OSError, ValueError) as e:
        try:
            data = model_config_dict(name, model_spec.revision)  # known hub ids, offline
        except UserError:
            raise UserError(
                f"cannot read the config of model '{name}': {_first_line(e)}",
                hint="give a local folder with config.json, a hub id in the Hugging Face "
                "cache (or reachable from here), tiny:<type> or random:<name>",
            ) from None
    if data.get("auto_map") and not model_spec.trust_remote_code:
        raise UserError(
            f"model '{name}' ships its own code (auto_map in its config.json), which vlaunch "
            "runs only when allowed",
            hint="set model.trust_remote_code=true if you trust that code (read its *.py "
            "files first)",
        )
    try:
        return AutoConfig.for_model(**data)
    except ValueError:
        raise UserError(
            f"transformers does not know model_type '{data.get('model_type')}' of '{name}'",
            hint="use a vision-language checkpoint of an architecture this transformers "
            "offers (`vlaunch models`), or one with its own code and "
            "model.trust_remote_code=true",
        ) from None


#: Auto classes a remote-code VLM may register in its `auto_map`, in order of preference
#: (NVILA's `-hf` checkpoints register `AutoModel`).
REMOTE_AUTO_CLASSES = (
    "AutoModelForImageTextToText",
    "AutoModelForVision2Seq",
    "AutoModelForCausalLM",
    "AutoModel",
)


def auto_class(config: Any, trust_remote_code: bool) -> Any:
    """The transformers auto class that builds this model: image-text-to-text, or the first
    one a remote-code model registers in its `auto_map`."""
    import transformers

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map and "AutoModelForImageTextToText" not in auto_map:
        for name in REMOTE_AUTO_CLASSES:
            if name in auto_map:
                return getattr(transformers, name)
    return transformers.AutoModelForImageTextToText


def build_from_config(
    config: PretrainedConfig, model_spec: ModelSpec, **kwargs: Any
) -> torch.nn.Module:
    """The image-text-to-text model class for `config` (remote code allowed by the spec);
    `kwargs` go to `from_config` (dtype, attn_implementation)."""
    cls = auto_class(config, model_spec.trust_remote_code)
    try:
        model: torch.nn.Module = cls.from_config(
            config, trust_remote_code=model_spec.trust_remote_code, **kwargs
        )
    except ValueError as e:
        model_type = getattr(config, "model_type", "?")
        raise UserError(
            f"transformers has no image-text-to-text model for model_type '{model_type}' "
            f"({_first_line(e)})",
            hint="use a vision-language checkpoint (`vlaunch models` lists the architectures "
            "this transformers offers); a model with its own code needs "
            "model.trust_remote_code=true and an auto_map for AutoModelForImageTextToText",
        ) from None
    return model


# --------------------------------------------------------------------------- internals


def _unwrap(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _kinds(model: Any) -> dict[str, Kind]:
    """Module name -> the kind of layer it is (for the parameters it owns directly)."""
    import torch

    out: dict[str, Kind] = {}
    for name, module in model.named_modules():
        cls = type(module).__name__
        kind: Kind
        if isinstance(module, torch.nn.Linear) or cls.endswith("Linear4bit"):
            kind = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kind = "embedding"
        elif "Norm" in cls:
            kind = "norm"
        elif isinstance(module, torch.nn.modules.conv._ConvNd):
            kind = "conv"
        else:
            kind = "other"
        out[name] = kind
    return out


def _stacks(model: Any, overrides: dict[str, Any]) -> list[LayerStack]:
    """The outermost ModuleLists of repeated layers (one class, or a few interleaved ones
    such as Mllama's self- and cross-attention decoder layers)."""
    import torch

    found: list[LayerStack] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) < 2:
            continue
        if any(name.startswith(p + ".") for p in inside):
            continue  # a list inside a layer (MoE experts, ...): part of that layer
        layers = [m for m in module if any(True for _ in m.parameters())]
        by_class: dict[str, Any] = {}
        for m in layers:
            by_class.setdefault(type(m).__name__, m)
        repeated = len(layers) - len(by_class) >= 1  # at least one class occurs twice
        layer_like = all(c.endswith(("Layer", "Block")) for c in by_class)
        if len(layers) != len(module) or not (repeated or layer_like) or len(by_class) > 3:
            continue
        linears = sorted(
            {
                re.sub(r"\.\d+(?=\.|$)", ".*", sub)
                for first in by_class.values()
                for sub, m in first.named_modules()
                if sub and (isinstance(m, torch.nn.Linear) or type(m).__name__.endswith("4bit"))
            }
        )
        found.append(
            LayerStack(
                prefix=name,
                layer_classes=tuple(by_class),
                count=len(module),
                part=part_of(name, overrides),
                linears=tuple(linears),
            )
        )
        inside.append(name)
    # Short lists of the same layers (Mllama's one-layer global vision transformer)
    classes = {c for s in found for c in s.layer_classes}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or not len(module):
            continue
        if any(name == p or name.startswith(p + ".") for p in inside):
            continue
        if {type(m).__name__ for m in module} <= classes:
            like = next(s for s in found if type(module[0]).__name__ in s.layer_classes)
            found.append(
                LayerStack(
                    name, like.layer_classes, len(module), part_of(name, overrides), like.linears
                )
            )
            inside.append(name)
    return found


def _tower_of(prefix: str, overrides: dict[str, Any]) -> str:
    """The outermost module of the vision tower that holds a stack."""
    components = prefix.split(".")
    for depth in range(1, len(components) + 1):
        head = ".".join(components[:depth])
        if head != "model" and part_of(head, overrides) == "vision_tower":
            return head
    return prefix


def _exists(prefix: str, params: Sequence[ParamInfo]) -> bool:
    return any(p.name == prefix or p.name.startswith(prefix + ".") for p in params)


def _vision_config(cfg: dict[str, Any]) -> dict[str, Any]:
    for key in ("vision_config", "vision_encoder_config", "visual"):
        value = cfg.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _has_video(model_type: str, cfg: dict[str, Any]) -> bool:
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    keys = ("video_token_id", "video_token_index")
    return model_type in VIDEO_PROCESSOR_MAPPING_NAMES or any(cfg.get(k) is not None for k in keys)


def _text_dims(text: dict[str, Any], layers: int) -> Dims:
    hidden = first_int(text, "hidden_size", "d_model", "n_embd")
    heads = first_int(text, "num_attention_heads", "n_head", default=1)
    return Dims(
        hidden=hidden,
        layers=layers or first_int(text, "num_hidden_layers", "num_layers"),
        intermediate=first_int(text, "intermediate_size", "ffn_dim", default=4 * hidden),
        heads=heads,
        kv_heads=first_int(text, "num_key_value_heads", default=heads),
        vocab=first_int(text, "vocab_size"),
        experts=first_int(text, "num_experts", "num_local_experts", "n_routed_experts"),
        experts_per_token=first_int(text, "num_experts_per_tok", "moe_topk"),
    )


def _vision_dims(vision: dict[str, Any], layers: int) -> Dims:
    # Qwen2-VL: embed_dim is the tower width, hidden_size the language model's
    hidden = first_int(vision, "embed_dim", "hidden_size", "width")
    image = first_int(vision, "image_size", default=448)
    patch = first_int(vision, "patch_size", default=14)
    mlp_ratio = vision.get("mlp_ratio")
    default_inter = int(hidden * float(mlp_ratio)) if mlp_ratio else 4 * hidden
    return Dims(
        hidden=hidden,
        layers=layers or first_int(vision, "num_hidden_layers", "depth"),
        intermediate=first_int(vision, "intermediate_size", default=default_inter),
        heads=first_int(vision, "num_attention_heads", "num_heads", "attention_heads", default=1),
        tokens_per_image=(image // max(1, patch)) ** 2,
    )


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.models.describe")
    parser.add_argument("name_or_path")
    parser.add_argument("--revision")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--out", metavar="FILE", help="write the JSON there (default: stdout)")
    args = parser.parse_args(argv)
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from vlaunch_core.spec import ModelSpec

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.basicConfig(level=logging.ERROR)
    spec = ModelSpec(
        name_or_path=args.name_or_path,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
    )
    try:
        result = describe_spec(spec).to_json()
        code = 0
    except UserError as e:
        result, code = {"error": e.message, "fix": e.hint}, 2
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    else:
        json.dump(result, sys.stdout)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
