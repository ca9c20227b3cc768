"""`vlaunch k8s JOB.yaml [--nodes N] [--gpus-per-node G] [--namespace NS] [--dry-run]`.

Through the launch pipeline (launcher/pipeline.py: validate, plan, fit gate) the job becomes
the `finetune-job` chart rendered with values derived from the spec and the plan (the plan
itself goes into the ConfigMap for `vlaunch run --plan`), and the objects are created with
the `kubernetes` client; prints the handle
`k8s:<namespace>/<name>` that `vlaunch status|logs|cancel` take. `--dry-run` prints the
rendered manifests instead, `--print-values` the chart values (for `helm install -f`).

Every `k8s:` option of the spec has a flag, generated from `vlaunch_core/k8s_options.py`
(`--shm-size 32Gi` is the override `k8s.shm_size=32Gi`), so the spec stays the one source.
"""

from __future__ import annotations

import argparse
import sys

from launcher.commands.common import add_job_argument, add_resource_flags, job_overrides, run_launch
from launcher.commands.flags import add_section_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlaunch_core.k8s_options import KubernetesOptions

    add_job_argument(parser)
    add_resource_flags(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the rendered manifests; create nothing"
    )
    parser.add_argument(
        "--print-values",
        action="store_true",
        help="print the chart values (for `helm install -f`); create nothing",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        default=None,
        help="kubeconfig context (default: the current one)",
    )
    add_section_flags(
        parser.add_argument_group("Kubernetes options (the spec's k8s: section)"),
        KubernetesOptions,
        "k8s",
    )


def run(args: argparse.Namespace) -> int:
    from launcher.k8s.backend import KubernetesBackend

    backend = KubernetesBackend(context=args.context)
    overrides = job_overrides(args)
    if args.print_values:
        sys.stdout.write(backend.dryrun(args.job, overrides).request.values_yaml())
        return 0
    return run_launch(backend, args.job, overrides, dry_run=args.dry_run)
