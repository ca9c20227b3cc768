"""`vlaunch slurm JOB.yaml [--nodes N] [--partition P] ... [--variant NAME] [--dry-run]`.

Through the launch pipeline (launcher/pipeline.py: validate, plan, fit gate) the job becomes
one sbatch script (Ray across the allocation, then the trainer driver with the launch's
plan, requeue before the time limit), submitted with `sbatch --parsable`; prints the handle
`slurm:<jobid>` that `vlaunch status|logs|cancel` take. `--dry-run` prints the script and
submits nothing. Every `slurm:` option of the spec has a flag generated from
`vlaunch_core/slurm_options.py` (`--max-restarts 5` is the override `slurm.max_restarts=5`).

`--in-allocation` is what the `slurm/srun_*.sh` entry points run inside a job: render the
script for the current allocation and execute it there.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from launcher.commands.common import add_job_argument, add_resource_flags, job_overrides, run_launch
from launcher.commands.flags import add_section_flags
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlaunch_core.slurm_options import SlurmOptions

    add_job_argument(parser)
    add_resource_flags(parser)
    add_section_flags(
        parser.add_argument_group("Slurm options (the job spec's slurm: section)"),
        SlurmOptions,
        "slurm",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sbatch script that would be submitted (stdout) and "
        "the files it would write (stderr); write and submit nothing",
    )
    parser.add_argument(
        "--in-allocation",
        action="store_true",
        help="run the job in the current Slurm allocation instead of "
        "submitting it (what the slurm/srun_*.sh entry points do)",
    )


def allocation_overrides() -> list[str]:
    """Nodes and GPUs of the allocation this process runs in."""
    if not os.environ.get("SLURM_JOB_ID"):
        raise UserError(
            "--in-allocation runs inside a Slurm job, and SLURM_JOB_ID is not set",
            hint="submit it: `sbatch slurm/srun_lora_llm.sh JOB.yaml`, or use `vlaunch slurm`",
        )
    out = []
    nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES")
    if nodes and nodes.isdigit():
        out.append(f"resources.nodes={nodes}")
    gpus = os.environ.get("SLURM_GPUS_PER_NODE", "").rpartition(":")[2]  # "8" or "h100:8"
    if gpus.isdigit() and int(gpus) > 0:
        out.append(f"resources.gpus_per_node={gpus}")
    return out


def with_variant(path: str, overrides: list[str], user_overrides: list[str]) -> list[str]:
    """`overrides` and then the overrides of the spec's variant (`--variant` or
    `slurm.variant`), which the user's own `key=value` overrides must not contradict."""
    from launcher.slurm.variants import check_conflicts, variant_overrides
    from vlaunch_core.spec_load import ProblemReport, load_spec

    try:
        variant = load_spec(path, overrides, check=False).slurm.variant
    except ProblemReport:  # the full validation that follows reports every problem
        return overrides
    if variant is None:
        return overrides
    check_conflicts(variant, user_overrides)
    return overrides + variant_overrides(variant)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The spec overrides of a `vlaunch slurm` command line: flags, `key=value`, the
    allocation (`--in-allocation`), then the variant."""
    overrides = job_overrides(args)
    if args.in_allocation:
        overrides += allocation_overrides()
    return with_variant(args.job, overrides, list(getattr(args, "overrides", None) or []))


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The job spec of a `vlaunch slurm` command line (as the pipeline validates it)."""
    from vlaunch_core.spec_load import load_spec

    return load_spec(args.job, overrides_from_args(args))


def run(args: argparse.Namespace) -> int:
    from launcher.slurm.backend import SlurmBackend

    backend = SlurmBackend(in_allocation=args.in_allocation, ask_cluster=not args.dry_run)
    return run_launch(backend, args.job, overrides_from_args(args), dry_run=args.dry_run)
