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
    from launcher.commands.common import print_json
    from launcher.output import Column, print_table
    from vlaunch_core.profiles import all_profiles, detect_local_profile

    profiles = all_profiles(args.file)
    if args.json:
        print_json({name: p.model_dump() for name, p in sorted(profiles.items())})
        return 0
    columns = [
        Column("name", keep=True),
        Column("device memory", right=True),
        Column("bf16", right=True),
        Column("GPUs/node", right=True),
        Column("host RAM", right=True),
        Column("CPUs", right=True),
        Column("peak TFLOP/s", right=True),
        Column("description"),
    ]
    rows = [
        (
            name,
            f"{p.gpu_memory_mib / 1024:.1f} GiB",
            "yes" if p.bf16 else "no",
            str(p.gpus_per_node),
            f"{p.host_memory_gib:.0f} GiB",
            str(p.cpus_per_node),
            f"{p.peak_tflops:g}" if p.peak_tflops else "-",
            p.description,
        )
        for name, p in sorted(profiles.items())
    ]
    print_table(f"hardware profiles (auto = {detect_local_profile()} here)", columns, rows)
    return 0
