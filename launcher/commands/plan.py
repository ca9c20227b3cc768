"""`vlaunch plan JOB.yaml [--nodes N] [--gpus-per-node G] [--profile P] [--json]`.

Exit status: 0 when the plan fits, 1 when the device or the host memory prediction does not
fit (after the table, the reason and the fixes as an error: the same error every launch
gives before it refuses; with `--json`, `fits` is false and the notes say why), 2 for an
invalid spec or an impossible batch.
"""

from __future__ import annotations

import argparse
import sys

from launcher.commands.common import add_job_argument, add_resource_flags, load_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_argument(parser)
    add_resource_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from launcher.plan_table import print_plan
    from vlaunch_core.plan import make_plan

    spec = load_job(args)
    plan = make_plan(spec)
    if args.json:  # one JSON document: `fits` and the notes say why not
        sys.stdout.write(plan.to_json_text())
        return 0 if plan.fits else 1
    print_plan(spec, plan)
    plan.require_fit()
    return 0
