"""Analytic parameter tables: every named parameter of a VLM from its config, without torch.

`param_table(config)` lists exactly what `model.named_parameters()` of the family's
`*ForConditionalGeneration` class (transformers 5) yields for that config: names, shapes, the
kind of layer, and the module (vision tower, projector, language model). Tied weights appear
once, as in `named_parameters()`. The memory estimator and `vlaunch plan` use it; a test
builds every family on the meta device and compares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from vlaunch_core.errors import UserError
from vlaunch_core.models.families import get_family
from vlaunch_core.models.shape_parts import (
    Entry,
    clip_vision,
    decoder,
    idefics3_vision,
    mllama_text,
    mllama_vision,
    qwen2_5_vision,
    qwen2_vision,
    siglip_vision,
    text_config_of,
)

Kind = Literal["linear", "embedding", "norm", "conv", "other"]
ModuleName = Literal["vision_tower", "projector", "language_model", "other"]


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    kind: Kind
    module: ModuleName

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def param_table(config: Mapping[str, Any], family: str | None = None) -> list[ParamInfo]:
    """Every named parameter of the model that `config` describes."""
    from vlaunch_core.models.families import detect_family

    fam = get_family(family or detect_family(config))
    model_type = str(config.get("model_type", fam.model_types[0]))
    builder = _BUILDERS.get(model_type)
    if builder is None:
        raise UserError(
            f"no parameter table for model_type '{model_type}'",
            hint="add one in vlaunch_core/models/shapes.py (docs/models.md)",
        )
    entries = list(builder(config))
    return [
        ParamInfo(name, shape, cast(Kind, kind), fam.module_of(name))
        for name, shape, kind in entries
    ]


# --------------------------------------------------------------------------- per model type


def _sub(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if not isinstance(value, dict):
        raise UserError(
            f"model config has no '{key}' section",
            hint="use the config.json written by transformers for this model",
        )
    return value


def _tied(config: Mapping[str, Any], text: Mapping[str, Any], *, from_text: bool) -> bool:
    """transformers 5 ties the LM head when the top-level config says so; some classes also
    forward a `tie_word_embeddings` saved in the text config (pre-v5 checkpoints)."""
    default = config.get("model_type") == "paligemma"
    top = bool(config.get("tie_word_embeddings", default))
    return top or (from_text and bool(text.get("tie_word_embeddings", False)))


def _lm_head(text: Mapping[str, Any], tied: bool, vocab: int | None = None) -> list[Entry]:
    if tied:
        return []
    return [
        ("lm_head.weight", (vocab or int(text["vocab_size"]), int(text["hidden_size"])), "linear")
    ]


def _llava(config: Mapping[str, Any]) -> Iterator[Entry]:
    model_type = config.get("model_type")
    vision = _sub(config, "vision_config")
    text = text_config_of(_sub(config, "text_config"))
    vision_type = vision.get("model_type", "clip_vision_model")
    if vision_type == "clip_vision_model":
        tower = clip_vision(vision)
    elif vision_type == "siglip_vision_model":
        tower = siglip_vision(vision)
    else:
        raise UserError(
            f"LLaVA with a '{vision_type}' vision tower is not supported",
            hint="vlaunch knows clip_vision_model and siglip_vision_model towers",
        )
    h_vision = int(tower.hidden)
    hidden = int(text["hidden_size"])
    layer = config.get("vision_feature_layer", -2)
    n_features = len(layer) if isinstance(layer, list) else 1
    bias = bool(config.get("multimodal_projector_bias", True))
    if model_type in ("llava_next", "llava_next_video"):
        yield "model.image_newline", (hidden,), "other"
    yield from _prefixed("model.vision_tower.", tower.entries)
    proj = "model.multi_modal_projector."
    yield proj + "linear_1.weight", (hidden, h_vision * n_features), "linear"
    if bias:
        yield proj + "linear_1.bias", (hidden,), "linear"
    yield proj + "linear_2.weight", (hidden, hidden), "linear"
    if bias:
        yield proj + "linear_2.bias", (hidden,), "linear"
    yield from _prefixed("model.language_model.", decoder(text))
    yield from _lm_head(text, _tied(config, text, from_text=model_type != "llava_next"))


def _qwen_text(config: Mapping[str, Any], text_type: str) -> dict[str, Any]:
    """Qwen-VL hub configs are flat: text keys sit at the top level."""
    if isinstance(config.get("text_config"), dict):
        text = dict(config["text_config"])
    else:
        text = {k: v for k, v in config.items() if k not in ("vision_config", "model_type")}
    text.setdefault("model_type", text_type)
    return text_config_of(text)


def _qwen2_vl(config: Mapping[str, Any]) -> Iterator[Entry]:
    text = _qwen_text(config, "qwen2_vl_text")
    yield from _prefixed("model.visual.", qwen2_vision(_sub(config, "vision_config")).entries)
    yield from _prefixed("model.language_model.", decoder(text))
    yield from _lm_head(text, _tied(config, text, from_text=True))


def _qwen2_5_vl(config: Mapping[str, Any]) -> Iterator[Entry]:
    text = _qwen_text(config, "qwen2_5_vl_text")
    yield from _prefixed("model.visual.", qwen2_5_vision(_sub(config, "vision_config")).entries)
    yield from _prefixed("model.language_model.", decoder(text))
    yield from _lm_head(text, _tied(config, text, from_text=True))


def _idefics3(config: Mapping[str, Any]) -> Iterator[Entry]:
    vision = _sub(config, "vision_config")
    text = text_config_of(_sub(config, "text_config"))
    tower = idefics3_vision(vision, str(config.get("model_type", "idefics3")))
    scale = int(config.get("scale_factor", 2))
    yield from _prefixed("model.vision_model.", tower.entries)
    yield (
        "model.connector.modality_projection.proj.weight",
        (int(text["hidden_size"]), tower.hidden * scale * scale),
        "linear",
    )
    yield from _prefixed("model.text_model.", decoder(text))
    yield from _lm_head(text, _tied(config, text, from_text=False))


def _paligemma(config: Mapping[str, Any]) -> Iterator[Entry]:
    vision = _sub(config, "vision_config")
    text = text_config_of(_sub(config, "text_config"))
    tower = siglip_vision(vision)
    projection = int(config.get("projection_dim", 2048))
    yield from _prefixed("model.vision_tower.", tower.entries)
    yield "model.multi_modal_projector.linear.weight", (projection, tower.hidden), "linear"
    yield "model.multi_modal_projector.linear.bias", (projection,), "linear"
    yield from _prefixed("model.language_model.", decoder(text))
    yield from _lm_head(text, _tied(config, text, from_text=False))


def _mllama(config: Mapping[str, Any]) -> Iterator[Entry]:
    vision = _sub(config, "vision_config")
    text = text_config_of(_sub(config, "text_config"))
    tower = mllama_vision(vision)
    hidden = int(text["hidden_size"])
    yield from _prefixed("model.vision_model.", tower.entries)
    yield from _prefixed("model.language_model.", mllama_text(text))
    yield "model.multi_modal_projector.weight", (hidden, tower.hidden), "linear"
    yield "model.multi_modal_projector.bias", (hidden,), "linear"
    # MllamaConfig has no tie_word_embeddings: the LM head is never tied.
    yield from _lm_head(text, tied=False)


def _prefixed(prefix: str, entries: Iterable[Entry]) -> Iterator[Entry]:
    for name, shape, kind in entries:
        yield prefix + name, shape, kind


_BUILDERS = {
    "llava": _llava,
    "llava_next": _llava,
    "llava_next_video": _llava,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "paligemma": _paligemma,
    "mllama": _mllama,
}


# --------------------------------------------------------------------------- summaries


def counts_by_module(table: Iterable[ParamInfo]) -> dict[str, int]:
    """Parameters per module (`vision_tower`, `projector`, `language_model`, `other`)."""
    out = {"vision_tower": 0, "projector": 0, "language_model": 0, "other": 0}
    for p in table:
        out[p.module] += p.numel
    return out


def norm_param_count(
    table: Iterable[ParamInfo], module: str = "vision_tower", exclude: Iterable[str] = ()
) -> int:
    """Parameters of the norm layers of `module` (LayerNorm tuning), minus `exclude` prefixes."""
    skip = tuple(exclude)
    return sum(
        p.numel
        for p in table
        if p.module == module and p.kind == "norm" and not _under_any(p.name, skip)
    )


def lora_targets_matched(table: Iterable[ParamInfo], targets: str | list[str]) -> list[ParamInfo]:
    """The Linear weights whose module matches `targets` with peft's rules: a string is a
    regex matched in full against the module name, a list matches by name suffix."""
    out = []
    for p in table:
        if p.kind != "linear" or len(p.shape) != 2 or not p.name.endswith(".weight"):
            continue
        if module_matches(p.name.removesuffix(".weight"), targets):
            out.append(p)
    return out


def module_matches(module_name: str, targets: str | list[str]) -> bool:
    """peft's `target_modules` semantics for one module name."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module_name) is not None
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def lora_param_count(
    table: Iterable[ParamInfo], targets: str | list[str], r: int, use_dora: bool = False
) -> int:
    """Trainable parameters LoRA adds: r x (in + out) per matched Linear, + out for DoRA."""
    total = 0
    for p in lora_targets_matched(table, targets):
        out_features, in_features = p.shape
        total += r * (in_features + out_features) + (out_features if use_dora else 0)
    return total


def _under_any(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
