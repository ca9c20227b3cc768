"""`vlaunch local JOB.yaml [--gpus N | --workers N] [key=value ...]`: train on this machine.

Through the launch pipeline (launcher/pipeline.py: validate, plan, fit gate), starts a local
Ray cluster sized to the plan, trains (or resumes the run of the same name), prints where the
outputs are. `--gpus 0` or `--workers N` trains on the CPU (N processes). `--dry-run` prints
the resolved spec and what it would start, and starts nothing. Ctrl-C saves a checkpoint at
the next step and exits with 75; run the same command to resume.

Exit status: 0 finished, 75 stopped with a resumable checkpoint, 1 failed or the plan does
not fit, 2 invalid spec.
"""

from __future__ import annotations

import argparse

from launcher.commands.common import add_job_argument, job_overrides, run_launch
from launcher.commands.flags import add_field_flag
from vlaunch_core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_argument(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        default=None,
        help="train on N local GPUs (= resources.gpus_per_node=N); 0 trains on the CPU",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=None,
        help="train on the CPU with N worker processes "
        "(= resources.profile=cpu resources.gpus_per_node=N)",
    )
    add_field_flag(parser, "--profile", "resources.profile", metavar="P")
    parser.add_argument("--no-plan", action="store_true", help="do not print the plan first")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved spec and what would start (after the plan and fit checks); "
        "start nothing",
    )


def device_overrides(gpus: int | None, workers: int | None) -> list[str]:
    """The spec overrides that `--gpus` / `--workers` stand for."""
    for flag, value in (("--gpus", gpus), ("--workers", workers)):
        if value is not None and value < 0:
            raise UserError(f"{flag} must be >= 0 (got {value})")
    if workers is not None:
        if workers == 0:
            raise UserError("--workers must be >= 1", hint="--workers 1 trains in one process")
        return ["resources.profile=cpu", f"resources.gpus_per_node={workers}"]
    if gpus is None:
        return []
    if gpus == 0:
        return ["resources.profile=cpu"]
    from launcher.local import local_gpu_count

    have = local_gpu_count()
    if have == 0:
        raise UserError(
            f"--gpus {gpus}: no NVIDIA GPU is visible on this machine (nvidia-smi)",
            hint="use --gpus 0 (or --workers N) to train on the CPU",
        )
    if have < gpus:
        raise UserError(
            f"--gpus {gpus}: this machine has {have} visible GPU(s)",
            hint=f"use --gpus {have} or fewer",
        )
    return [f"resources.gpus_per_node={gpus}"]


def run(args: argparse.Namespace) -> int:
    from launcher.local import LocalBackend

    args.overrides = device_overrides(args.gpus, args.workers) + list(args.overrides or [])
    backend = LocalBackend(show_plan=not args.no_plan)
    return run_launch(backend, args.job, job_overrides(args), dry_run=args.dry_run)
