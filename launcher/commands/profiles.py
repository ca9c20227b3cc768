"""`vlaunch profiles`: the hardware profiles the planner knows."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PROFILES.yaml",
        help="also load user profiles from this YAML file",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from launcher.commands.common import print_json
    from vlaunch_core.profiles import all_profiles, detect_local_profile

    profiles = all_profiles(args.file)
    if args.json:
        print_json({name: p.model_dump() for name, p in sorted(profiles.items())})
        return 0
    table = Table(title=f"hardware profiles (auto = {detect_local_profile()} here)")
    for col in (
        "name",
        "device memory",
        "bf16",
        "GPUs/node",
        "host RAM",
        "CPUs",
        "peak TFLOP/s",
        "description",
    ):
        table.add_column(col, justify="right" if col not in ("name", "description") else "left")
    for name, p in sorted(profiles.items()):
        table.add_row(
            name,
            f"{p.gpu_memory_mib / 1024:.1f} GiB",
            "yes" if p.bf16 else "no",
            str(p.gpus_per_node),
            f"{p.host_memory_gib:.0f} GiB",
            str(p.cpus_per_node),
            f"{p.peak_tflops:g}" if p.peak_tflops else "-",
            p.description,
        )
    Console().print(table)
    return 0
