"""`vlaunch run JOB.yaml [--plan PLAN.json] [--ray-address ADDR] [key=value ...]`.

The in-cluster entry point, used by the Slurm job scripts and the Helm chart once their Ray
cluster is up: joins it (`--ray-address`, else $RAY_ADDRESS, else `auto`), waits for the
plan's devices to join, and runs the trainer driver with the launch's plan (`--plan
PLAN.json`; without it, it plans again). The contract (docs/trainer.md):

- exit 0: the run finished (checkpoints, export, eval.json are in the run directory);
- exit 75 (EX_TEMPFAIL): it was stopped on purpose (SIGUSR1 before a time limit, SIGTERM on
  preemption, Ctrl-C) *after* a resumable checkpoint was saved; the same command with the
  same spec (same `name` and `output.dir`) resumes it exactly;
- exit 1: training failed (more than `train.max_failures` worker failures) or the plan does
  not fit; exit 2: invalid spec or impossible batch.
"""

from __future__ import annotations

import argparse

from launcher.commands.common import add_job_argument, load_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_argument(parser)
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="address of the Ray cluster (default: $RAY_ADDRESS, else auto)",
    )
    parser.add_argument(
        "--wait-for-workers",
        type=float,
        metavar="SECONDS",
        default=600.0,
        help="how long to wait for the plan's GPUs/CPUs to join the cluster (default: 600)",
    )
    parser.add_argument(
        "--plan",
        metavar="PLAN.json",
        default=None,
        help="the launch's plan (`vlaunch slurm` and `vlaunch k8s` write it beside the job "
        "spec); without it the job is planned here",
    )


def run(args: argparse.Namespace) -> int:
    from launcher.cluster_run import run_on_cluster
    from vlaunch_core.plan import read_plan

    spec = load_job(args)
    plan = read_plan(args.plan) if args.plan else None
    return run_on_cluster(
        spec, plan=plan, address=args.ray_address, wait_seconds=args.wait_for_workers
    )
