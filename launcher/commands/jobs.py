"""`vlaunch status|logs|cancel JOB_ID`: one command set for every backend.

JOB_ID is the handle a launch printed (`slurm:123`, a bare `123`, `k8s:<namespace>/<name>`,
`local:<run directory>`); the prefix picks the backend (`launcher.jobs.backend_for`). Every
backend answers with the same `JobStatus`: one state for all backends, the backend's own
word beside it (both in `--json`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from launcher.commands.common import print_json

if TYPE_CHECKING:
    from launcher.jobs import JobStatus

_HANDLES = "slurm:<jobid> (or a bare Slurm job id), k8s:<namespace>/<name> or local:<run dir>"


def _add_job_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help=_HANDLES)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def _print_status(status: JobStatus, as_json: bool) -> None:
    if as_json:
        print_json(status.to_dict())
        return
    print(status.headline())
    for key, value in status.detail.items():
        if value not in (None, "", [], {}):
            print(f"  {key}: {value}")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_id(parser)


def run_status(args: argparse.Namespace) -> int:
    from launcher.backends import backend_for

    _print_status(backend_for(args.job_id).describe(args.job_id), args.json)
    return 0


def add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help=_HANDLES)
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new output until the job ends"
    )


def run_logs(args: argparse.Namespace) -> int:
    from launcher.backends import backend_for

    for text in backend_for(args.job_id).log_iter(args.job_id, follow=args.follow):
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_id(parser)


def run_cancel(args: argparse.Namespace) -> int:
    from launcher.backends import backend_for

    _print_status(backend_for(args.job_id).cancel(args.job_id), args.json)
    return 0
