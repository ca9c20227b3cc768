"""LoRA target resolution: defaults, scoping to one module, and the checks that catch mistakes.

peft matches `target_modules` against every module name of the whole VLM, so a bare `q_proj`
also puts adapters on the vision tower's `q_proj`. Targets here are always regexes scoped to
one part (language model or vision tower), checked against the real module names before
peft sees them: a target that matches nothing, or that reaches a part that is not tuned with
LoRA, is a user error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from vlaunch_core.errors import UserError
from vlaunch_core.models.description import ModelDescription

if TYPE_CHECKING:
    import torch

_PART_KEY = {"language_model": "target_modules", "vision_tower": "vision_target_modules"}


@dataclass(frozen=True)
class LoraTargets:
    """The resolved LoRA targets of one part."""

    part: str
    regex: str
    matched: tuple[str, ...]
    """Module names that get an adapter."""


def scoped_regex(family: ModelDescription, part: str, targets: str | Sequence[str] | None) -> str:
    """The target regex for `part`: the family's default, names scoped to the part, or the
    user's own regex (used as written, then checked)."""
    if targets is None:
        default = family.lora_targets(cast(Any, part))
        if default is None:
            raise UserError(
                f"{family.name}: no Linear layer was found in the layers of its {part} to put "
                "LoRA on",
                hint=f"name the modules in tuning.lora.{_PART_KEY[part]}, or tune the {part} "
                "another way (full, layernorm, frozen)",
            )
        return default
    if isinstance(targets, str):
        return targets
    if not targets:
        raise UserError(
            f"tuning.lora.{_PART_KEY[part]} is an empty list",
            hint="name at least one Linear module, or remove the key for defaults",
        )
    prefixes = "|".join(re.escape(p) for p in getattr(family, part))
    names = "|".join(re.escape(t) for t in targets)
    return rf"(?:{prefixes})\.(?:.*\.)?(?:{names})"


def resolve_targets(
    model: torch.nn.Module,
    family: ModelDescription,
    part: str,
    targets: str | Sequence[str] | None,
    *,
    lora_parts: Iterable[str],
    excluded: Sequence[str] = (),
) -> LoraTargets:
    """Resolve and check the targets of `part` against the model's module names.

    `lora_parts` are the parts tuned with LoRA (targets may not reach any other part);
    `excluded` are module-name prefixes left without adapters (unused by the forward pass).
    """
    regex = scoped_regex(family, part, targets)
    key = f"tuning.lora.{_PART_KEY[part]}"
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise UserError(
            f"{key}: invalid regex {regex!r}: {e}",
            hint="write a Python regex matched in full against module names",
        ) from e
    matched: list[str] = []
    outside: list[tuple[str, str]] = []
    not_linear: list[str] = []
    for name, module in model.named_modules():
        if not name or pattern.fullmatch(name) is None:
            continue
        owner = family.module_of(name)
        if owner != part:
            outside.append((name, owner))
            continue
        if any(name == p or name.startswith(p + ".") for p in excluded):
            continue
        if not _is_lora_layer(module):
            not_linear.append(f"{name} ({type(module).__name__})")
            continue
        matched.append(name)
    _check(family, part, key, regex, matched, outside, not_linear, set(lora_parts), model)
    return LoraTargets(part=part, regex=regex, matched=tuple(matched))


def _is_lora_layer(module: torch.nn.Module) -> bool:
    import torch

    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def _check(
    family: ModelDescription,
    part: str,
    key: str,
    regex: str,
    matched: list[str],
    outside: list[tuple[str, str]],
    not_linear: list[str],
    lora_parts: set[str],
    model: torch.nn.Module,
) -> None:
    where = part.replace("_", " ")
    for name, owner in outside:
        scope = (
            f"scope the regex to the {where} (its modules start with "
            f"{' or '.join(repr(p) for p in getattr(family, part))})"
        )
        if owner in lora_parts:
            other = "vision_target_modules" if owner == "vision_tower" else "target_modules"
            raise UserError(
                f"{key} {regex!r} reaches the {owner.replace('_', ' ')} (e.g. '{name}')",
                hint=f"{scope}; targets of the {owner.replace('_', ' ')} go in tuning.lora.{other}",
            )
        hint = (
            f"{scope}, or set tuning.{owner}=lora"
            if owner in ("vision_tower", "language_model")
            else f"{scope}: the {owner} is trained in full or frozen, not with LoRA"
        )
        raise UserError(
            f"{key} {regex!r} reaches the {owner.replace('_', ' ')} (e.g. '{name}'), which is "
            "not tuned with LoRA",
            hint=hint,
        )
    if not_linear:
        raise UserError(
            f"{key} {regex!r} matches modules LoRA cannot adapt: {', '.join(not_linear[:3])}",
            hint="target Linear layers (e.g. q_proj, v_proj), not whole blocks",
        )
    if not matched:
        examples = _linear_names(model, family, part)
        raise UserError(
            f"{key} {regex!r} matches no Linear module of the {where}",
            hint=f"Linear layers of the {where} are named like: {', '.join(examples)}",
        )


def _linear_names(
    model: torch.nn.Module, family: ModelDescription, part: str, n: int = 8
) -> list[str]:
    """Distinct trailing names of the part's Linear layers (`q_proj`, `mlp.fc1`, ...)."""
    import torch

    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and family.module_of(name) == part:
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    return list(seen)[:n] or ["(none)"]
