"""`vlaunch models [FAMILY] [--presets] [--json]`: supported VLM families and tuning presets.

Reads the torch-free registries only (`vlaunch_core.models.families`, `.presets`).
"""

from __future__ import annotations

import argparse
from typing import Any

from launcher.commands.common import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", nargs="?", help="show the details of one family")
    parser.add_argument(
        "--presets",
        action="store_true",
        help="list the tuning presets and the VILA script each one matches",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.presets:
        rows = preset_rows()
        if args.json:
            print_json(rows)
        else:
            _print_table(
                "Tuning presets (VILA's fine-tuning variants)", rows, skip=("description",)
            )
        return 0
    if args.family:
        details = family_details(args.family)
        if args.json:
            print_json(details)
        else:
            _print_details(details)
        return 0
    rows = family_rows()
    if args.json:
        print_json(rows)
    else:
        _print_table(
            "Supported VLM families (model.family; `vlaunch models FAMILY` for details)",
            rows,
            skip=("model_type", "examples"),
        )
    return 0


def family_rows() -> list[dict[str, Any]]:
    from vlaunch_core.models.families import FAMILIES

    return [
        {
            "family": f.name,
            "models": f.title,
            "model_type": ", ".join(f.model_types),
            "video": f.supports_video,
            "multi_image": f.supports_multi_image,
            "examples": ", ".join(f.examples),
        }
        for f in FAMILIES.values()
    ]


def family_details(name: str) -> dict[str, Any]:
    from vlaunch_core.models.families import get_family

    f = get_family(name)
    return {
        "family": f.name,
        "models": f.title,
        "model_types": list(f.model_types),
        "transformers_class": f.model_class,
        "vision_tower": list(f.vision_tower),
        "projector": list(f.projector),
        "language_model": list(f.language_model),
        "default_lora_targets": f.default_lora_targets,
        "default_vision_lora_targets": f.default_vision_lora_targets,
        "image_token": f.image_token,
        "video_token": f.video_token,
        "video": f.supports_video,
        "multi_image": f.supports_multi_image,
        "examples": list(f.examples),
        "quirks": list(f.quirks),
    }


def preset_rows() -> list[dict[str, Any]]:
    from vlaunch_core.models.presets import PRESETS

    return [
        {
            "preset": p.name,
            "vision_tower": p.vision_tower,
            "projector": p.projector,
            "language_model": p.language_model,
            "vila_script": p.vila_script,
            "description": p.description,
        }
        for p in PRESETS.values()
    ]


def _print_table(title: str, rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    keys = [k for k in rows[0] if k not in skip]
    for key in keys:
        table.add_column(key.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[k]) for k in keys))
    Console().print(table)


def _print_details(details: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{details['models']} (family {details['family']})", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if key in ("family", "models"):
            continue
        text = "\n".join(str(v) for v in value) or "-" if isinstance(value, list) else value
        table.add_row(key.replace("_", " "), _cell(text))
    Console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "-"
    return "-" if value is None else str(value)
