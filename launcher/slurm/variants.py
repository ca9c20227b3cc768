"""VILA's `srun_*` script names as spec overrides (`vlaunch slurm --variant`).

A variant selects its tuning preset and, for the `*_grouped` ones, the length-grouped
sampler. They are applied as overrides, so the resolved spec written next to the job script
shows them.
"""

from __future__ import annotations

from vlaunch_core.errors import UserError, unknown_name
from vlaunch_core.overrides import parse_override


def variant_overrides(variant: str) -> list[str]:
    """The `key=value` overrides a variant stands for."""
    from vlaunch_core.models.presets import VARIANTS

    if variant not in VARIANTS:
        raise unknown_name("Slurm variant", variant, VARIANTS)
    preset = VARIANTS[variant]
    out = [f"tuning.preset={preset.name}"]
    if preset.grouped:
        out.append("data.group_by_length=true")
    return out


def check_conflicts(variant: str, overrides: list[str]) -> None:
    """A command-line override that contradicts the variant is an error, not a silent win."""
    wanted = {}
    for override in variant_overrides(variant):
        path, value = parse_override(override)
        wanted[".".join(path)] = value
    for token in overrides:
        path, value = parse_override(token)
        key = ".".join(path)
        if key in wanted and value != wanted[key]:
            raise UserError(
                f"the override {token} contradicts --variant {variant} ({key}={wanted[key]})",
                hint=f"drop one of them: {variant} sets {key}",
            )
