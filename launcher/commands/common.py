"""Arguments shared by the commands that take a job spec.

Flags such as `--nodes` are sugar for overrides of spec keys (`resources.nodes=...`),
generated from the schema by `launcher/commands/flags.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from launcher.commands.flags import add_field_flag, flag_overrides

if TYPE_CHECKING:
    from launcher.pipeline import Backend
    from vlaunch_core.spec import JobSpec


def add_job_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB.yaml", help="the job spec")


def add_resource_flags(parser: argparse.ArgumentParser) -> None:
    add_field_flag(parser, "--nodes", "resources.nodes", metavar="N")
    add_field_flag(parser, "--gpus-per-node", "resources.gpus_per_node", metavar="G")
    add_field_flag(parser, "--profile", "resources.profile", metavar="P")


def load_job(args: argparse.Namespace, *, check: bool = True) -> JobSpec:
    """The job spec named by `args.job`, with flag overrides then `key=value` overrides."""
    from vlaunch_core.spec_load import load_spec

    return load_spec(args.job, job_overrides(args), check=check)


def job_overrides(args: argparse.Namespace) -> list[str]:
    """The generated flags' overrides, then the `key=value` ones (which win)."""
    return flag_overrides(args) + list(getattr(args, "overrides", []) or [])


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def run_launch(
    backend: Backend[Any], job: str, overrides: list[str], *, dry_run: bool = False
) -> int:
    """Launch `job` through the pipeline (launcher/pipeline.py) on `backend`.

    `--dry-run` prints the request on stdout (exactly what would be submitted) and what
    submitting would do on stderr; otherwise the handle goes to stdout, notes to stderr. A
    job run in the foreground (local) returns its exit status."""
    if dry_run:
        request = backend.dryrun(job, overrides).request
        print(
            f"# vlaunch {backend.name} --dry-run: nothing written, nothing submitted. It would:",
            file=sys.stderr,
        )
        for line in request.describe().splitlines():
            print(f"#   {line}", file=sys.stderr)
        sys.stdout.write(request.materialize())
        return 0
    scheduled = backend.submit(job, overrides)
    if scheduled.exit_code is not None:
        return scheduled.exit_code
    if scheduled.notes:
        print(scheduled.notes.strip(), file=sys.stderr)
    print(scheduled.handle)
    return 0
