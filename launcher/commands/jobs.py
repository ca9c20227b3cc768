"""`vlaunch status|logs|cancel JOB_ID`: one command set for every backend.

JOB_ID is the handle `vlaunch slurm` or `vlaunch k8s` printed (`slurm:123`, a bare `123`,
`k8s:<namespace>/<name>`); the prefix picks the backend's control module
(`launcher.jobs.control_module`).
"""

from __future__ import annotations

import argparse
import sys

from launcher.commands.common import print_json


def _add_job_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job_id",
        metavar="JOB_ID",
        help="slurm:<jobid> (or a bare Slurm job id) or k8s:<namespace>/<name>",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_id(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run_status(args: argparse.Namespace) -> int:
    from launcher.jobs import control_module

    status = control_module(args.job_id).status(args.job_id)
    if args.json:
        print_json(status.to_dict())
        return 0
    print(f"{status.job_id}  {status.state}")
    for key, value in status.detail.items():
        if value not in (None, "", [], {}):
            print(f"  {key}: {value}")
    return 0


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_id(parser)
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new output until the job ends"
    )


def run_logs(args: argparse.Namespace) -> int:
    from launcher.jobs import control_module

    return int(control_module(args.job_id).logs(args.job_id, follow=args.follow, out=sys.stdout))


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_id(parser)


def run_cancel(args: argparse.Namespace) -> int:
    from launcher.jobs import JobStatus, control_module

    result = control_module(args.job_id).cancel(args.job_id)
    if isinstance(result, JobStatus):
        print(f"{result.job_id}  {result.state}")
    else:
        print(f"cancel requested for {args.job_id}")
    return 0
