"""What vlaunch knows about a model, derived from the model itself (torch-free data).

`trainer.models.describe` builds the model on the meta device (no weights, any size) and reads
off everything below; the result travels as JSON, so the launcher can plan with it without
importing torch (`vlaunch_core.models.catalog` caches it per model). Nothing here is written
per family: the parts come from the module tree, the layer classes from the repeated layer
stacks, the LoRA targets from the Linear layers inside those stacks, the shapes from the
parameters; a family's true quirks live in `vlaunch_core.models.quirks`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from vlaunch_core.models.quirks import Quirks

Part = Literal["vision_tower", "projector", "language_model", "other"]
PARTS: tuple[Part, ...] = ("vision_tower", "projector", "language_model")
"""The parts a tuning mode applies to (`other`: audio towers, generation heads, ...)."""
Kind = Literal["linear", "embedding", "norm", "conv", "other"]

DESCRIPTION_FORMAT = 1

#: Attribute names of each part in the module tree (any depth up to 3 below the root;
#: the projector is looked for first: Qwen-VL's merger lives inside `visual`).
PART_NAMES: dict[Part, tuple[str, ...]] = {
    "projector": (
        "multi_modal_projector",
        "multimodal_projector",
        "mm_projector",
        "connector",
        "merger",
        "aligner",
        "projector",
        "vision_projection",
        "language_projection",
        "image_to_text_projection",
        "vision_adapter",
        "vision_resampler",
        "resampler_model",
        "embed_vision",
        "visual_embeddings_table",
    ),
    "vision_tower": (
        "vision_tower",
        "visual",
        "vision_model",
        "vision_encoder",
        "image_tower",
        "video_tower",
        "vision_embed_tokens",
        "high_res_vision_model",
    ),
    "language_model": ("language_model", "text_model", "llm", "text_decoder", "lm_head"),
}
_DEPTH = 3


def part_of(name: str, overrides: Mapping[str, Part] | None = None) -> Part:
    """The part a parameter (or module) name belongs to, by the names along its path.

    `overrides` maps name prefixes to parts for what the names cannot tell (quirks)."""
    name = canonical_name(name)
    if overrides:
        best = max((p for p in overrides if _under(name, p)), key=len, default=None)
        if best is not None:
            return overrides[best]
    components = name.split(".")
    if components and components[0] == "model":
        components = components[1:]
    head = components[:_DEPTH]
    order: tuple[Part, ...] = ("projector", "vision_tower", "language_model")
    for part in order:
        if any(c in PART_NAMES[part] for c in head):
            return part
    return "other"


def canonical_name(name: str) -> str:
    """A parameter/module name as in the bare model: without the PeftModel's
    `base_model.model.`, `.base_layer`, `.original_module` and `.modules_to_save.default`."""
    name = name.removeprefix("base_model.model.")
    for marker in (".base_layer", ".original_module", ".modules_to_save.default"):
        name = name.replace(marker + ".", ".")
        name = name.removesuffix(marker)
    return name


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class ParamInfo:
    """One named parameter of the model (tied weights once, as `named_parameters()`)."""

    name: str
    shape: tuple[int, ...]
    kind: Kind
    module: Part

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LayerStack:
    """A run of identical layers (`model.language_model.layers.0`, `.1`, ...)."""

    prefix: str
    """Module name of the ModuleList (`model.language_model.layers`)."""
    layer_classes: tuple[str, ...]
    """The class of its layers (a few when kinds alternate, e.g. Mllama's cross-attention)."""
    count: int
    part: Part
    linears: tuple[str, ...]
    """Names (relative to one layer) of the Linear modules inside a layer."""

    @property
    def regex(self) -> str:
        return re.escape(self.prefix) + r"\.\d+"

    def linear_regex(self) -> str:
        """The Linear modules inside its layers (`.*` in a name stands for an index)."""
        names = "|".join(re.escape(n).replace(r"\*", r"\d+") for n in self.linears)
        return rf"{self.regex}\.({names})"


@dataclass(frozen=True)
class Dims:
    """Sizes the activation model needs (from the model's own config)."""

    hidden: int = 0
    layers: int = 0
    intermediate: int = 0
    heads: int = 1
    kv_heads: int = 1
    vocab: int = 0
    experts: int = 0
    experts_per_token: int = 0
    tokens_per_image: int = 0


@dataclass(frozen=True)
class ModelDescription:
    """A model as vlaunch needs to know it (see the module docstring)."""

    model_type: str
    architecture: str
    """The transformers (or remote-code) class the model is built with."""
    params: tuple[ParamInfo, ...]
    stacks: tuple[LayerStack, ...]
    text: Dims
    vision: Dims
    tied_embeddings: bool = False
    video: bool = False
    """The processor has a video path (a video processor, or a video token in the config)."""
    multi_image: bool = True
    remote_code: bool = False
    unused_prefixes: tuple[str, ...] = ()
    """Parameters the forward pass never uses (kept frozen; e.g. vision layers after the
    feature layer LLaVA-style models read)."""
    part_overrides: dict[str, Part] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    lora_all_linears: bool = False
    """LoRA targets are every Linear of a part (lm_head excepted), not only those in its
    layers (a quirk: NVILA)."""

    # ------------------------------------------------------------------ parts

    @property
    def name(self) -> str:
        """The model type (config `model_type`): what "family" means in vlaunch now."""
        return self.model_type

    @property
    def quirks(self) -> Quirks:
        from vlaunch_core.models.quirks import quirks_for

        return quirks_for(self.model_type)

    @property
    def vision_tower(self) -> tuple[str, ...]:
        return self.prefixes("vision_tower")

    @property
    def projector(self) -> tuple[str, ...]:
        return self.prefixes("projector")

    @property
    def language_model(self) -> tuple[str, ...]:
        return self.prefixes("language_model")

    @property
    def supports_video(self) -> bool:
        return self.video

    @property
    def supports_multi_image(self) -> bool:
        return self.multi_image

    @property
    def default_lora_targets(self) -> str | None:
        return self.lora_targets("language_model")

    @property
    def default_vision_lora_targets(self) -> str | None:
        return self.lora_targets("vision_tower")

    def module_of(self, name: str) -> Part:
        """Which part a parameter (or module) name belongs to."""
        return part_of(name, self.part_overrides)

    def prefixes(self, part: Part) -> tuple[str, ...]:
        """The top-most module names of a part (what peft's modules_to_save copies)."""
        cache: dict[str, tuple[str, ...]] = self.__dict__.setdefault("_prefixes", {})
        if part in cache:
            return cache[part]
        out: set[str] = set()
        for p in self.params:
            if p.module != part:
                continue
            components = p.name.split(".")
            for depth in range(1, len(components) + 1):
                prefix = ".".join(components[:depth])
                if prefix != "model" and part_of(prefix, self.part_overrides) == part:
                    out.add(prefix)
                    break
        cache[part] = tuple(sorted(out))
        return cache[part]

    @property
    def layer_classes(self) -> tuple[str, ...]:
        """Decoder and vision-encoder layer classes (FSDP units, activation checkpointing)."""
        return tuple(
            dict.fromkeys(c for s in self.stacks if s.part != "other" for c in s.layer_classes)
        )

    def lora_targets(self, part: Part) -> str | None:
        """peft `target_modules` regex: every Linear inside the part's layer stacks (every
        Linear of the part, lm_head excepted, with `lora_all_linears`)."""
        if self.lora_all_linears:
            names = {
                re.sub(r"\.\d+(?=\.)", ".*", p.name.removesuffix(".weight"))
                for p in self.params
                if p.module == part
                and p.kind == "linear"
                and p.name.endswith(".weight")
                and "lm_head" not in p.name.split(".")
            }
            patterns = [re.escape(n).replace(r"\*", r"\d+") for n in sorted(names)]
            return "|".join(patterns) or None
        alternatives = [s.linear_regex() for s in self.stacks if s.part == part and s.linears]
        if not alternatives:
            return None
        return (
            alternatives[0]
            if len(alternatives) == 1
            else "|".join(f"(?:{a})" for a in alternatives)
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {p: 0 for p in (*PARTS, "other")}
        for p in self.params:
            out[p.module] += p.numel
        return out

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = DESCRIPTION_FORMAT
        d["params"] = [[p.name, list(p.shape), p.kind, p.module] for p in self.params]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelDescription:
        if d.get("format") != DESCRIPTION_FORMAT:
            raise ValueError(f"model description format {d.get('format')!r}")
        return cls(
            model_type=str(d["model_type"]),
            architecture=str(d["architecture"]),
            params=tuple(
                ParamInfo(str(n), tuple(int(x) for x in s), cast(Kind, k), cast(Part, m))
                for n, s, k, m in d["params"]
            ),
            stacks=tuple(
                LayerStack(
                    prefix=s["prefix"],
                    layer_classes=tuple(s["layer_classes"]),
                    count=int(s["count"]),
                    part=s["part"],
                    linears=tuple(s["linears"]),
                )
                for s in d["stacks"]
            ),
            text=Dims(**d["text"]),
            vision=Dims(**d["vision"]),
            tied_embeddings=bool(d.get("tied_embeddings", False)),
            video=bool(d.get("video", False)),
            multi_image=bool(d.get("multi_image", True)),
            remote_code=bool(d.get("remote_code", False)),
            unused_prefixes=tuple(d.get("unused_prefixes", ())),
            part_overrides=dict(d.get("part_overrides", {})),
            notes=tuple(d.get("notes", ())),
            lora_all_linears=bool(d.get("lora_all_linears", False)),
        )


def first_int(config: Mapping[str, Any], *keys: str, default: int = 0) -> int:
    """The first of `keys` that the config sets (ints only)."""
    for k in keys:
        v = config.get(k)
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            return v
        if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            return max(v)
    return default


def unused_vision_layers(
    config: Mapping[str, Any], stack: LayerStack, tower: str
) -> tuple[str, ...]:
    """LLaVA-style models read the hidden states of one (or a few) layers of the vision
    tower `tower` (`vision_feature_layer`): the layers after it, and the tower's final norm
    and pooling head, never reach the loss."""
    layer = config.get("vision_feature_layer")
    raw = layer if isinstance(layer, list) else [layer]
    layers = [x for x in raw if isinstance(x, int) and not isinstance(x, bool)]
    if not layers or len(layers) != len(raw):
        return ()
    n = stack.count
    last_used = max((n + i if i < 0 else i - 1) for i in layers)  # hidden_states[k]
    out = [f"{stack.prefix}.{i}" for i in range(max(0, last_used + 1), n)]
    return (*out, f"{tower}.post_layernorm", f"{tower}.head")


def module_matches(module_name: str, targets: str | Sequence[str]) -> bool:
    """peft's `target_modules` semantics for one module name: a string is a regex matched in
    full, a list matches by name or name suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module_name) is not None
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def names_in(params: Iterable[ParamInfo], prefixes: Iterable[str]) -> list[str]:
    pre = tuple(prefixes)
    return [p.name for p in params if any(_under(p.name, x) for x in pre)]
