"""`vlaunch models [NAME] [--presets] [--json]`: the architectures vlaunch can fine-tune.

Without NAME: every image-text-to-text architecture the installed transformers offers,
marking those the test matrix verifies. With NAME (a model type such as `qwen3_vl`, or a model
reference: local folder, hub id, `tiny:<type>`, `random:<name>`): its parts, layer classes,
LoRA targets and parameters per part, read off the model itself (built on the meta device).
Both need the training stack (transformers); `--presets` does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from launcher.commands.common import print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a model type (qwen3_vl) or a model (folder, hub id, tiny:<type>) to describe",
    )
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
    if args.name:
        details = model_details(args.name)
        if args.json:
            print_json(details)
        else:
            _print_details(details)
        return 0
    from trainer.models.catalog import architectures

    rows = architectures()
    if args.json:
        print_json(rows)
    else:
        n = sum(1 for r in rows if r["verified"])
        _print_table(
            f"Image-text-to-text architectures of this transformers ({len(rows)}; {n} "
            "verified by vlaunch's test matrix; `vlaunch models NAME` for details)",
            rows,
            skip=("video",),  # `videos` says it
        )
    return 0


def model_details(name: str) -> dict[str, Any]:
    """Parts, layer classes, LoRA targets and parameter counts of a model type or model."""
    from trainer.models.catalog import architectures
    from trainer.models.describe import describe_model_type
    from trainer.models.media import MediaSupport
    from vlaunch_core.models.catalog import check_supported, describe
    from vlaunch_core.spec import ModelSpec

    types = {r["model_type"] for r in architectures()}
    if name in types:
        d = describe_model_type(name)
        source = "default config of the architecture"
    elif ":" not in name and "/" not in name and not Path(name).expanduser().exists():
        from vlaunch_core.errors import UserError, did_you_mean

        raise UserError(
            f"'{name}' is neither an architecture of this transformers nor a model folder."
            f"{did_you_mean(name, types)}",
            hint="`vlaunch models` lists the architectures; or give a folder, a hub id "
            "(org/name), tiny:<type> or random:<name>",
        )
    else:
        spec = ModelSpec(name_or_path=name)
        check_supported(spec)
        found = describe(spec)
        if found is None:
            from vlaunch_core.errors import UserError

            raise UserError(
                f"'{name}' cannot be described here (not downloaded, or no training stack)",
                hint="download its config.json first, or give a model type (vlaunch models)",
            )
        d = found
        source = name
    counts = d.counts()
    return {
        "model": source,
        "model_type": d.model_type,
        "class": d.architecture,
        "parameters": {part: n for part, n in counts.items() if n},
        "vision_tower": list(d.vision_tower),
        "projector": list(d.projector),
        "language_model": list(d.language_model),
        "layer_classes": list(d.layer_classes),
        "lora_targets": d.lora_targets("language_model"),
        "vision_lora_targets": d.lora_targets("vision_tower"),
        "unused": list(d.unused_prefixes),
        "video": d.video,
        "multi_image": d.multi_image,
        "media": MediaSupport.of(d).statement(),
        "quirks": list(d.notes),
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
    from launcher.output import Column, print_table

    keys = [k for k in rows[0] if k not in skip]
    columns = [
        Column(k.replace("_", " "), keep=k in ("model_type", "preset", "class")) for k in keys
    ]
    print_table(title, columns, [[_cell(row[k]) for k in keys] for row in rows])


def _print_details(details: dict[str, Any]) -> None:
    from launcher.output import Column, print_table

    rows = []
    for key, value in details.items():
        if key in ("model", "model_type"):
            continue
        text = value
        if isinstance(value, dict):
            text = "\n".join(f"{k}: {v:,}" for k, v in value.items())
        elif isinstance(value, list):
            text = "\n".join(str(v) for v in value) or "-"
        rows.append((key.replace("_", " "), _cell(text)))
    print_table(
        f"{details['model_type']} ({details['model']})",
        [Column("key"), Column("value", keep=True)],
        rows,
        show_header=False,
    )


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "-"
    return "-" if value is None or value == "" else str(value)
