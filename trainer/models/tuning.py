"""Apply a tuning plan to a loaded VLM: which parameters train, and how.

Per part: vision tower `full | lora | layernorm | frozen`, projector `full | frozen`, language
model `full | lora | qlora | frozen` (`TuningSpec.modes()` resolves the preset and overrides).
LoRA on both the vision tower and the language model is ONE PeftModel with one scoped regex
per part. Non-LoRA parts trained next to adapters (the projector, vision-tower norms, a fully
tuned vision tower) are peft `modules_to_save`, so the saved adapter restores them.

    model, report = apply_tuning(loaded.model, loaded.family, spec.tuning,
                                 gradient_checkpointing=spec.train.gradient_checkpointing)
    optimizer = torch.optim.AdamW(param_groups(model, report, spec.train.lr,
                                               spec.train.weight_decay))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from trainer.models.lora_targets import LoraTargets, resolve_targets
from trainer.models.quantization import is_quantized, require_qlora
from trainer.models.tuning_report import PARTS, TuningReport
from vlaunch_core.errors import UserError
from vlaunch_core.models.description import ModelDescription, canonical_name

if TYPE_CHECKING:
    import torch

    from vlaunch_core.spec import TuningSpec

logger = logging.getLogger(__name__)

__all__ = ["TuningReport", "apply_tuning", "is_norm", "param_groups", "part_of"]


def apply_tuning(
    model: torch.nn.Module,
    family: ModelDescription,
    tuning: TuningSpec,
    *,
    gradient_checkpointing: bool = False,
) -> tuple[torch.nn.Module, TuningReport]:
    """Freeze, unfreeze and wrap `model` as `tuning` says; returns the model to train (a
    `PeftModel` when any part uses LoRA) and the report."""
    modes = tuning.modes()
    unused = family.unused_prefixes
    lora_parts = [p for p, m in modes.items() if m in ("lora", "qlora")]
    if modes["language_model"] == "qlora":
        require_qlora()
        if not is_quantized(model):
            raise UserError(
                "tuning.language_model=qlora but the model was loaded unquantized",
                hint="load it with load_model(spec.model, tuning=spec.tuning) so the language "
                "model is read in 4-bit",
            )

    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(model)

    trained = _trained_modules(model, family, modes, unused)
    lora_info: dict[str, Any] | None = None
    modules_to_save: list[str] = []
    outside: list[str] = trained
    if lora_parts:
        targets = {
            part: resolve_targets(
                model,
                family,
                part,
                tuning.lora.target_modules
                if part == "language_model"
                else tuning.lora.vision_target_modules,
                lora_parts=lora_parts,
                excluded=unused,
            )
            for part in lora_parts
        }
        # Trained modules go into the adapter (peft modules_to_save keeps a trainable copy),
        # except bare parameters and a fully tuned language model (too big to duplicate).
        modules_to_save = [
            n for n in trained if _is_module(model, n) and family.module_of(n) != "language_model"
        ]
        outside = [n for n in trained if n not in modules_to_save]
        model = _wrap_lora(
            model, tuning, targets, modules_to_save, unused, quantized=is_quantized(model)
        )
        lora_info = {
            "r": tuning.lora.r,
            "alpha": tuning.lora.resolved_alpha,
            "dropout": tuning.lora.dropout,
            "use_dora": tuning.lora.use_dora,
            "targets": {
                p: {"regex": t.regex, "matched": list(t.matched)} for p, t in targets.items()
            },
        }
    base = cast(Any, model).get_base_model() if lora_parts else model
    for name in outside:
        owner = _get(base, name)
        for p in owner.parameters() if hasattr(owner, "parameters") else [owner]:
            p.requires_grad_(True)
    _freeze_unused(model, unused)

    total, trainable = _count(model, family)
    report = TuningReport(
        family=family.name,
        modes=modes,
        total=total,
        trainable=trainable,
        lr_multipliers=tuning.lr_multipliers.model_dump(),
        lora=lora_info,
        modules_to_save=modules_to_save,
        trained_outside_adapter=outside if lora_parts else [],
        frozen_unused=list(unused),
        quantized=is_quantized(model),
        gradient_checkpointing=gradient_checkpointing,
        part_overrides=dict(family.part_overrides),
    )
    if report.trainable_params == 0:
        raise UserError(
            "the tuning plan trains no parameter of this model",
            hint="train at least one part (e.g. tuning.preset=lora_llm)",
        )
    return model, report


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing, non-reentrant: the reentrant variant breaks when the inputs
    of a checkpointed block need no gradient (frozen embeddings; seed 002's errors)."""
    kwargs = {"use_reentrant": False}
    m = cast(Any, model)
    if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x
        m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _trained_modules(
    model: torch.nn.Module, family: ModelDescription, modes: dict[str, str], unused: tuple[str, ...]
) -> list[str]:
    """Names of the (non-LoRA) modules trained in full: whole parts, or the vision tower's
    norm layers in `layernorm` mode. Unused modules are left out."""
    out: list[str] = []
    for part in ("vision_tower", "projector", "language_model"):
        mode = modes[part]
        if mode == "full":
            out += [n for n in _part_roots(model, family, part) if not _under_any(n, unused)]
        elif mode == "layernorm":
            out += [
                name
                for name, module in model.named_modules()
                if is_norm(module)
                and family.module_of(name) == part
                and not _under_any(name, unused)
            ]
    return out


def _part_roots(model: torch.nn.Module, family: ModelDescription, part: str) -> Iterator[str]:
    """The top-most modules (or parameters' owners) of a part that exist in this model.

    A part's prefix may hold another part (Qwen-VL's merger sits in `model.visual`), so the
    prefix module is split into children that belong to the part only.
    """
    for prefix in getattr(family, part):
        yield from _split(model, family, part, prefix)


def _split(model: torch.nn.Module, family: ModelDescription, part: str, name: str) -> Iterator[str]:
    import torch

    try:
        module = model.get_submodule(name)
    except AttributeError:
        if _is_parameter(model, name):
            yield name  # a bare parameter (LLaVA-NeXT's image_newline)
        return
    if not any(True for _ in module.parameters()):
        return
    nested = any(family.module_of(f"{name}.{n}") != part for n, _ in module.named_modules() if n)
    if not nested and not isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):
        yield name
        return
    for child, _ in module.named_children():
        if family.module_of(f"{name}.{child}") == part:
            yield from _split(model, family, part, f"{name}.{child}")
    for pname, _ in module.named_parameters(recurse=False):
        yield f"{name}.{pname}"


def _wrap_lora(
    model: torch.nn.Module,
    tuning: TuningSpec,
    targets: dict[str, LoraTargets],
    modules_to_save: list[str],
    unused: tuple[str, ...],
    *,
    quantized: bool,
) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from trainer.models.lora_linear import fuse_lora_linears

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    regex = "|".join(f"(?:{t.regex})" for t in targets.values())
    exclude = "|".join(rf"{re.escape(p)}(?:\..*)?" for p in unused) or None
    # resolve_targets refused every match outside the checked ones; peft must agree.
    assert _fullmatches(model, regex, exclude) == {n for t in targets.values() for n in t.matched}
    config = LoraConfig(
        r=tuning.lora.r,
        lora_alpha=tuning.lora.resolved_alpha,  # type: ignore[arg-type]  # a float works
        lora_dropout=tuning.lora.dropout,
        use_dora=tuning.lora.use_dora,
        target_modules=regex,
        exclude_modules=exclude,
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    planned = {n for t in targets.values() for n in t.matched}
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    try:
        wrapped = get_peft_model(cast(Any, model), config)
    except ValueError as e:
        if "ParamWrapper" not in str(e):
            raise
        raise _rewritten_targets(model_type, str(e)) from None
    adapted = {canonical_name(n) for n, m in wrapped.named_modules() if _is_lora_layer(m)}
    if adapted != planned:
        extra, missing = sorted(adapted - planned), sorted(planned - adapted)
        raise _rewritten_targets(
            model_type,
            f"adapted but not planned: {extra[:3]}; planned but not adapted: {missing[:3]}",
        )
    fuse_lora_linears(wrapped)
    return wrapped


def _is_lora_layer(module: torch.nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def _rewritten_targets(model_type: str, detail: str) -> UserError:
    """peft moved LoRA off the planned modules (its transformers v4 -> v5 conversion of MoE
    models renames Linear targets called gate_proj/up_proj/down_proj to fused expert
    parameters, dense MLP layers included): train exactly the plan or not at all."""
    return UserError(
        f"peft would not put LoRA on the planned modules of this {model_type} model ({detail})",
        hint="peft converts the LoRA targets of some MoE architectures (MLP projections become "
        "the fused expert parameters); set tuning.lora.target_modules to the attention "
        "projections (e.g. [q_proj, k_proj, v_proj, o_proj]) or tune the language model in full",
    )


def _fullmatches(model: torch.nn.Module, regex: str, exclude: str | None) -> set[str]:
    pattern, skip = re.compile(regex), re.compile(exclude) if exclude else None
    return {
        n
        for n, _ in model.named_modules()
        if n and pattern.fullmatch(n) and not (skip and skip.fullmatch(n))
    }


def _is_module(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _is_parameter(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


def _get(model: torch.nn.Module, name: str) -> Any:
    """A submodule, or a bare parameter (LLaVA-NeXT's image_newline)."""
    return model.get_submodule(name) if _is_module(model, name) else model.get_parameter(name)


def _freeze_unused(model: torch.nn.Module, unused: tuple[str, ...]) -> None:
    for name, p in model.named_parameters():
        if _under_any(canonical_name(name), unused):
            p.requires_grad_(False)


def _count(
    model: torch.nn.Module, family: ModelDescription
) -> tuple[dict[str, int], dict[str, int]]:
    total = dict.fromkeys(PARTS, 0)
    trainable = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():  # shared tensors are listed once
        if ".original_module." in name:
            continue  # the frozen original of a modules_to_save copy: counted once
        part = part_of(family, name)
        total[part] += p.numel()
        if p.requires_grad:
            trainable[part] += p.numel()
    return total, trainable


def part_of(family: ModelDescription, param_name: str) -> str:
    """The part (vision_tower, projector, language_model, other) of a parameter name, also
    for names inside a PeftModel (`base_model.model.`, `.base_layer`, `modules_to_save`)."""
    return family.module_of(param_name)


def is_norm(module: torch.nn.Module) -> bool:
    """LayerNorm / RMSNorm layers (leaf modules whose class name ends in Norm)."""
    import torch

    if isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm):
        return True
    return type(module).__name__.endswith("Norm") and not list(module.children())


def param_groups(
    model: torch.nn.Module, report: TuningReport, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: per part (LR x its multiplier) and per decay (no weight
    decay on norms, biases and other 1-D parameters). Empty groups are left out."""
    from vlaunch_core.models.description import part_of as part_of_name

    overrides = cast(Any, report.part_overrides)
    groups: dict[tuple[str, bool], list[Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not name.endswith(".bias")
        groups.setdefault((part_of_name(name, overrides), decay), []).append(p)
    out = []
    for (part, decay), params in groups.items():
        mult = report.lr_multipliers.get(part, 1.0)
        out.append(
            {
                "name": f"{part}/{'decay' if decay else 'no_decay'}",
                "params": params,
                "lr": lr * mult,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return sorted(out, key=lambda g: str(g["name"]))


def _under_any(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
