"""`vlaunch validate JOB.yaml [key=value ...]`: check a spec, print it resolved."""

from __future__ import annotations

import argparse

from launcher.commands.common import add_job_argument, load_job, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the resolved spec as JSON")


def run(args: argparse.Namespace) -> int:
    spec = load_job(args)
    if args.json:
        print_json(spec.document())
    else:
        print(f"# {args.job}: valid. Resolved spec (every default written out):")
        print(spec.to_yaml(), end="")
    return 0
